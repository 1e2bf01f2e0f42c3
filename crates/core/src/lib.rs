//! Domain types and state machines of Atelier.
//!
//! Nothing in this crate performs I/O: it describes what a sandbox or a workspace is,
//! which changes are legal, and which inputs are valid, so that the store, the server
//! and the drivers all agree on one set of rules.

pub mod agent_config;
pub mod event;
pub mod id;
pub mod image;
pub mod network;
pub mod prebuild;
pub mod sandbox;
pub mod task;
pub mod template;
pub mod validate;
pub mod workspace;

pub use event::{Event, EventKind};
pub use id::{SandboxId, WorkspaceId};
pub use network::{Egress, HostService, NetworkSpec};
pub use prebuild::{Prebuild, PrebuildState};
pub use sandbox::{
    Operation, Outcome, Resources, Sandbox, SandboxState, SharedFolder, TransitionError,
};
pub use task::{Effort, Task, TaskSpec, TaskStatus};
pub use validate::{FieldError, ValidationErrors};
pub use workspace::{Workspace, WorkspacePatch, WorkspaceSpec};
