//! Session templates: how a task's prompt and effort become what the agent is told.
//!
//! Built-ins: `implementation` (the task's prompt; four effort levels mapping to a model,
//! a reasoning effort and plan mode), and three reviews that run on a task's branch:
//! `best-practices-review`, `security-review`, `simplification`. Each can be overridden
//! globally and per workspace. Prompts may use `{{task.prompt}}`, `{{task.title}}`,
//! `{{branch}}`, `{{base_branch}}` and `{{repo}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::task::Effort;
use crate::validate::{FieldError, ValidationErrors};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTemplate {
    pub name: String,
    pub title: String,
    /// The prompt sent to the agent, with `{{…}}` variables.
    pub prompt: String,
    /// What each effort level means.
    #[serde(default)]
    pub efforts: BTreeMap<String, EffortSettings>,
}

/// The agent settings of one effort level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EffortSettings {
    /// `provider/model`; the agent's default when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Reasoning effort (the agent's "variant"), e.g. `low`, `high`.
    #[serde(default)]
    pub reasoning: Option<String>,
    /// Plan before changing anything.
    #[serde(default)]
    pub plan: bool,
}

/// The values a prompt's variables take.
pub struct PromptVars<'a> {
    pub prompt: &'a str,
    pub title: &'a str,
    pub branch: &'a str,
    pub base_branch: &'a str,
    pub repo: &'a str,
}

pub const VARIABLES: &[&str] = &["task.prompt", "task.title", "branch", "base_branch", "repo"];

const PLAN: &str = "Before changing anything, write your plan as a todo list, then carry it out.";

impl SessionTemplate {
    pub fn render(&self, vars: &PromptVars<'_>) -> String {
        self.prompt
            .replace("{{task.prompt}}", vars.prompt)
            .replace("{{task.title}}", vars.title)
            .replace("{{branch}}", vars.branch)
            .replace("{{base_branch}}", vars.base_branch)
            .replace("{{repo}}", vars.repo)
    }

    /// The settings for `effort`, with plan mode folded into the prompt's instructions.
    pub fn settings(&self, effort: Effort) -> EffortSettings {
        let key = serde_json::to_value(effort)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.efforts.get(&key).cloned().unwrap_or_default()
    }

    /// The full prompt for `effort`: the rendered template, with the plan instruction first
    /// when that effort plans.
    pub fn prompt_for(&self, effort: Effort, vars: &PromptVars<'_>) -> String {
        let body = self.render(vars);
        if self.settings(effort).plan {
            format!("{PLAN}\n\n{body}")
        } else {
            body
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            errors.push(FieldError::new("name", "must be 1–64 of a-z, 0-9 and '-'"));
        }
        if self.title.trim().is_empty() {
            errors.push(FieldError::new("title", "must not be empty"));
        }
        if self.prompt.trim().is_empty() {
            errors.push(FieldError::new("prompt", "must not be empty"));
        }
        let mut rest = self.prompt.as_str();
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else {
                errors.push(FieldError::new("prompt", "has an unclosed {{"));
                break;
            };
            let var = rest[start + 2..start + end].trim();
            if !VARIABLES.contains(&var) {
                errors.push(FieldError::new(
                    "prompt",
                    format!(
                        "unknown variable {{{{{var}}}}} (known: {})",
                        VARIABLES.join(", ")
                    ),
                ));
            }
            rest = &rest[start + end + 2..];
        }
        for key in self.efforts.keys() {
            if serde_json::from_value::<Effort>(serde_json::Value::String(key.clone())).is_err() {
                errors.push(FieldError::new(
                    format!("efforts.{key}"),
                    "is not an effort (low, medium, high, max)",
                ));
            }
        }
        errors.finish()
    }
}

fn efforts(levels: &[(&str, Option<&str>, bool)]) -> BTreeMap<String, EffortSettings> {
    levels
        .iter()
        .map(|(level, reasoning, plan)| {
            (
                (*level).to_owned(),
                EffortSettings {
                    model: None,
                    reasoning: reasoning.map(str::to_owned),
                    plan: *plan,
                },
            )
        })
        .collect()
}

fn review(name: &str, title: &str, focus: &str) -> SessionTemplate {
    SessionTemplate {
        name: name.into(),
        title: title.into(),
        prompt: format!(
            "You are reviewing the work on branch {{{{branch}}}} of {{{{repo}}}} (compare it with \
             {{{{base_branch}}}}: `git diff {{{{base_branch}}}}...HEAD`). The original task was:\n\n\
             {{{{task.prompt}}}}\n\n{focus} Fix what you find directly on this branch, keep each \
             change small, and finish with a short summary of what you changed and why."
        ),
        efforts: efforts(&[("low", Some("low"), false), ("medium", Some("medium"), false), ("high", Some("high"), false), ("max", Some("high"), true)]),
    }
}

/// The templates Atelier ships with.
pub fn builtin() -> Vec<SessionTemplate> {
    vec![
        SessionTemplate {
            name: "implementation".into(),
            title: "Implementation".into(),
            prompt: "{{task.prompt}}".into(),
            efforts: efforts(&[("low", Some("low"), false), ("medium", Some("medium"), false), ("high", Some("high"), true), ("max", Some("high"), true)]),
        },
        review(
            "best-practices-review",
            "Best Practices Review",
            "Look for deviations from the project's conventions and the language's best practices: naming, error handling, tests that can fail, duplication, dead code.",
        ),
        review(
            "security-review",
            "Security Review",
            "Look for security problems: injection, unchecked input, secrets in code or logs, unsafe defaults, missing authorization, path traversal, unsafe deserialization.",
        ),
        review(
            "simplification",
            "Simplification",
            "Look for what is more complicated than it needs to be: derivable state, near-copies, deep nesting, needless abstraction. Make it simpler without changing behaviour.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> PromptVars<'static> {
        PromptVars {
            prompt: "Add a cache",
            title: "Cache",
            branch: "atelier/cache-1",
            base_branch: "main",
            repo: "app",
        }
    }

    #[test]
    fn builtins_are_valid_and_render_their_variables() {
        for t in builtin() {
            t.validate().unwrap_or_else(|e| panic!("{}: {e}", t.name));
            let text = t.render(&vars());
            assert!(!text.contains("{{"), "{}: {text}", t.name);
            assert_eq!(t.efforts.len(), 4, "{}", t.name);
        }
        let review = builtin()
            .into_iter()
            .find(|t| t.name == "security-review")
            .unwrap();
        let text = review.render(&vars());
        assert!(
            text.contains("atelier/cache-1")
                && text.contains("Add a cache")
                && text.contains("main...HEAD"),
            "{text}"
        );
    }

    #[test]
    fn effort_maps_to_reasoning_and_plan_mode() {
        let imp = &builtin()[0];
        assert_eq!(imp.settings(Effort::Low).reasoning.as_deref(), Some("low"));
        assert!(!imp.prompt_for(Effort::Low, &vars()).contains("plan"));
        assert!(imp
            .prompt_for(Effort::Max, &vars())
            .starts_with("Before changing anything"));
    }

    #[test]
    fn bad_templates_name_the_field() {
        let t = SessionTemplate {
            name: "Bad Name".into(),
            title: " ".into(),
            prompt: "Do {{nope}} and {{task.prompt".into(),
            efforts: efforts(&[("huge", None, false)]),
        };
        let fields: Vec<_> = t
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            fields,
            ["name", "title", "prompt", "prompt", "efforts.huge"]
        );
    }
}
