//! What the conformance suites share: how a test answers an ask, and filters over the
//! normalized events of a turn.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_runtimes::{
    AgentEvent, Answer, Cursor, EventStream, Interaction, InteractionOutcome, PermissionReply,
    RuntimeError, TurnEndReason,
};
use futures::StreamExt;

/// How long one event may take before the adapter counts as hung.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(20);

/// What to do when the agent asks something.
pub enum Act {
    Answer(Answer),
    Abort,
    Nothing,
}

pub fn allow_once(_: &Interaction) -> Act {
    Act::Answer(Answer::Permission {
        reply: PermissionReply::Once,
        message: None,
    })
}

pub fn asked(events: &[AgentEvent]) -> Vec<Interaction> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::InteractionAsked(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

pub fn assert_no_raw(events: &[AgentEvent]) {
    let raw: Vec<_> = events.iter().filter(|e| e.kind() == "raw").collect();
    assert!(raw.is_empty(), "unmapped events: {raw:#?}");
}

pub fn files(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| match e {
            AgentEvent::FilesTouched { paths } => paths.clone(),
            _ => Vec::new(),
        })
        .collect()
}

pub async fn next(stream: &mut EventStream) -> Option<Result<(Cursor, AgentEvent), RuntimeError>> {
    tokio::time::timeout(TURN_TIMEOUT, stream.next())
        .await
        .expect("no event within the timeout: the adapter hangs")
}

pub fn resolved(events: &[AgentEvent]) -> Vec<(String, InteractionOutcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::InteractionResolved { id, outcome } => Some((id.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

/// A scenario shipped with the fake agent (`crates/fake-agent/scenarios`).
pub fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fake-agent/scenarios")
        .join(format!("{name}.yaml"))
}

pub fn texts(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text: Some(t), .. } => Some(t.clone()),
            _ => None,
        })
        .collect()
}

pub fn turn_end(events: &[AgentEvent]) -> (TurnEndReason, Option<String>) {
    match events.last() {
        Some(AgentEvent::TurnEnded { reason, error }) => (*reason, error.clone()),
        other => panic!("last event is not TurnEnded: {other:?}"),
    }
}
