//! The scenario DSL shared by every protocol fake.
//!
//! A scenario is a YAML list of steps (or a map with `steps:` and options). It starts
//! when the first prompt arrives; each step is one thing the "agent" does:
//!
//! ```yaml
//! drop_prompts: 0          # optional: silently drop the first N prompts (204, nothing recorded)
//! steps:
//!   - think: "Let me look"
//!   - todos: [{content: "Write tests", status: in_progress}, {content: "Fix bug", status: pending}]
//!   - say: "I will edit a file"
//!   - ask_permission: {tool: edit, pattern: src/lib.rs, title: "Edit src/lib.rs"}
//!   - edit_file: {path: src/lib.rs, content: "fn x() {}\n"}
//!   - tool: {name: bash, input: {command: "cargo test"}, output: "ok"}
//!   - ask_question: {questions: [{question: "Which DB?", options: [Postgres, SQLite], multiple: false, custom: true, secret: false}]}
//!   - usage: {input: 1200, output: 300, cost: 0.0123}
//!   - sleep_ms: 100
//!   - drop_stream            # close every SSE connection once, then go on
//!   - finish                 # end the turn (idle); the next steps wait for a new prompt
//!   - wait_for_prompt        # same boundary, spelled out
//!   - fail: "model exploded" # end the turn with an error
//!   - crash                  # exit the process
//! ```
//!
//! Replies decide what happens after an ask, as the real agent would: a permission
//! `once`/`always` goes on (`always` also auto-approves later asks for the same tool and
//! pattern), a `reject` with a message goes on with that feedback, a `reject` without a
//! message halts the turn; an answered question goes on, a dismissed one halts the turn.
//! An abort ends the turn and skips the rest of its steps.

use serde::Deserialize;
use serde_json::Value;

/// A parsed scenario.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Silently drop the first N prompts (the server answers 204 and records nothing),
    /// like OpenCode's `prompt_async` sometimes does.
    #[serde(default)]
    pub drop_prompts: u32,
    /// Steps are written as one-key maps (`- say: hi`) or bare words (`- finish`).
    #[serde(deserialize_with = "serde_yaml::with::singleton_map_recursive::deserialize")]
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Parses YAML: either a bare list of steps, or a map with `steps:` and options.
    pub fn from_yaml(text: &str) -> Result<Scenario, String> {
        let is_list = text
            .lines()
            .map(str::trim_start)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with('-'));
        if is_list {
            let steps: Vec<Step> = serde_yaml::with::singleton_map_recursive::deserialize(
                serde_yaml::Deserializer::from_str(text),
            )
            .map_err(|e| e.to_string())?;
            Ok(Scenario {
                steps,
                ..Scenario::default()
            })
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())
        }
    }

    pub fn from_file(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Scenario::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Assistant text (streamed as deltas, then the full text).
    Say(String),
    /// Reasoning text.
    Think(String),
    /// Replace the todo list.
    Todos(Vec<TodoSpec>),
    /// Write a file under the server's directory (really), as an edit tool call.
    EditFile {
        path: String,
        content: String,
    },
    /// Any tool call, pending → running → completed.
    Tool {
        name: String,
        #[serde(default)]
        input: Value,
        #[serde(default)]
        output: String,
        #[serde(default)]
        title: Option<String>,
    },
    /// Ask for a permission and wait for the reply.
    AskPermission {
        tool: String,
        pattern: String,
        #[serde(default)]
        title: Option<String>,
    },
    /// Ask questions and wait for the answers.
    AskQuestion {
        questions: Vec<QuestionSpec>,
    },
    /// Report token usage and cost for the current assistant message.
    Usage {
        #[serde(default)]
        input: u64,
        #[serde(default)]
        output: u64,
        #[serde(default)]
        reasoning: u64,
        #[serde(default)]
        cache_read: u64,
        #[serde(default)]
        cache_write: u64,
        #[serde(default)]
        cost: f64,
    },
    SleepMs(u64),
    /// End the turn normally.
    Finish,
    /// End the turn with an error.
    Fail(String),
    /// Exit the process at once.
    Crash,
    /// Close every event-stream connection once, then continue.
    DropStream,
    /// End the turn (if one is running) and wait for the next prompt.
    WaitForPrompt,
}

/// A todo entry in a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TodoSpec {
    pub content: String,
    #[serde(default = "pending")]
    pub status: String,
    #[serde(default = "medium")]
    pub priority: String,
}

fn pending() -> String {
    "pending".into()
}

fn medium() -> String {
    "medium".into()
}

/// A question in a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionSpec {
    pub question: String,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub options: Vec<OptionSpec>,
    #[serde(default)]
    pub multiple: bool,
    #[serde(default = "yes")]
    pub custom: bool,
    /// The answer is a secret (only Codex's questions say so).
    #[serde(default)]
    pub secret: bool,
}

fn yes() -> bool {
    true
}

/// An option: a bare label, or a label with a description.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OptionSpec {
    Label(String),
    Full {
        label: String,
        #[serde(default)]
        description: Option<String>,
    },
}

impl OptionSpec {
    pub fn label(&self) -> &str {
        match self {
            OptionSpec::Label(l) => l,
            OptionSpec::Full { label, .. } => label,
        }
    }

    pub fn description(&self) -> &str {
        match self {
            OptionSpec::Label(_) => "",
            OptionSpec::Full { description, .. } => description.as_deref().unwrap_or(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_step_kind_in_both_forms() {
        let yaml = r#"
name: all
drop_prompts: 1
steps:
  - think: "hmm"
  - say: "hello"
  - todos: [{content: a, status: in_progress}, {content: b}]
  - edit_file: {path: src/a.rs, content: "x"}
  - tool: {name: bash, input: {command: ls}, output: "a\nb"}
  - ask_permission: {tool: edit, pattern: src/a.rs}
  - ask_question: {questions: [{question: "Q?", options: [A, {label: B, description: bee}], multiple: true}]}
  - usage: {input: 10, output: 5, cost: 0.5}
  - sleep_ms: 5
  - drop_stream
  - finish
  - wait_for_prompt
  - fail: "boom"
  - crash
"#;
        let s = Scenario::from_yaml(yaml).expect("parse");
        assert_eq!(s.drop_prompts, 1);
        assert_eq!(s.steps.len(), 14);
        assert_eq!(s.steps[1], Step::Say("hello".into()));
        assert_eq!(s.steps[9], Step::DropStream);
        match &s.steps[6] {
            Step::AskQuestion { questions } => {
                assert_eq!(questions[0].options[1].label(), "B");
                assert_eq!(questions[0].options[1].description(), "bee");
                assert!(questions[0].custom);
            }
            other => panic!("{other:?}"),
        }
        let bare = Scenario::from_yaml("- say: hi\n- finish\n").expect("parse list");
        assert_eq!(bare.steps, vec![Step::Say("hi".into()), Step::Finish]);
    }

    #[test]
    fn rejects_unknown_steps_with_a_useful_error() {
        let err = Scenario::from_yaml("steps:\n  - dance: now\n").expect_err("must fail");
        assert!(err.contains("dance"), "{err}");
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                let s = Scenario::from_file(&path).expect("valid scenario");
                assert!(!s.steps.is_empty(), "{} has no steps", path.display());
                n += 1;
            }
        }
        assert!(n >= 10, "only {n} scenarios");
    }
}
