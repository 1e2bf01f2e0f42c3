//! Prebuilds: a workspace's expensive setup (clone the repos, run the init commands) done
//! once in a builder sandbox and captured, so that every later sandbox of the workspace
//! starts as a copy-on-write clone of it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::workspace::WorkspaceSpec;

/// Where a prebuild is in its life.
///
/// `building → ready | failed`; a ready prebuild becomes `superseded` when a newer one of
/// its workspace is ready (it keeps serving until then). Staleness is not a state: a
/// ready prebuild whose inputs moved carries a `stale` reason and keeps serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrebuildState {
    Building,
    Ready,
    Failed,
    Superseded,
}

impl PrebuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    /// Whether `self → to` is a legal move.
    pub fn can_become(self, to: PrebuildState) -> bool {
        matches!(
            (self, to),
            (Self::Building, Self::Ready)
                | (Self::Building, Self::Failed)
                | (Self::Ready, Self::Superseded)
        )
    }
}

impl fmt::Display for PrebuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrebuildState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "building" => Ok(Self::Building),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            "superseded" => Ok(Self::Superseded),
            _ => Err(format!("unknown prebuild state {s:?}")),
        }
    }
}

/// The commit a repo was at when the prebuild cloned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoCommit {
    pub url: String,
    pub branch: String,
    /// Where it is cloned, relative to the sandbox's working directory.
    pub path: String,
    pub commit: String,
}

/// A workspace's prebuild policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrebuildSettings {
    /// Start a new build by itself when the prebuild becomes stale (a branch moved, the
    /// workspace or its image changed). The old prebuild serves until the new is ready.
    #[serde(default = "yes")]
    pub auto_rebuild: bool,
}

fn yes() -> bool {
    true
}

impl Default for PrebuildSettings {
    fn default() -> Self {
        Self { auto_rebuild: true }
    }
}

/// A prebuild as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Prebuild {
    pub id: String,
    pub workspace_id: crate::WorkspaceId,
    pub state: PrebuildState,
    /// The driver that built it; only its sandboxes can start from it.
    pub driver: String,
    /// The builder sandbox (a prebuild promoted from a running sandbox names that one).
    pub sandbox_id: Option<crate::SandboxId>,
    pub commits: Vec<RepoCommit>,
    /// Hash of the workspace settings the prebuild depends on.
    pub config_hash: String,
    /// Hash (id) of the base image it was built on.
    pub image_hash: String,
    /// Whether clones resume the captured memory (`true`) or boot the captured disk.
    pub memory_snapshot: bool,
    /// The machine size clones get.
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Why the prebuild no longer matches its inputs (it still serves until replaced).
    pub stale: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The end of the build log, for a failed build.
    pub log_tail: Option<String>,
    /// `build` or `promote`.
    pub origin: String,
    /// Sandboxes that were started from it and still exist.
    pub clones: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The hash of everything in a workspace that a prebuild captures: repos, init commands,
/// base image, machine size, agent config. Secrets are left out (they are given to each
/// sandbox, never baked into a prebuild).
pub fn config_hash(spec: &WorkspaceSpec) -> String {
    let mut canonical = serde_json::json!({
        "repos": spec.repos,
        "init_commands": spec.init_commands,
        "base_image": spec.base_image,
        "resources": spec.resources,
        "agent_config": spec.agent_config,
    });
    // Only when set, so that the hashes of workspaces without one stay what they were.
    if spec.image.is_some() {
        canonical["image"] = serde_json::json!(spec.image_name());
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex(&digest[..12])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `commit` looks like a full git object id (SHA-1 or SHA-256, hex).
pub fn is_commit_id(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_moves_are_allowed() {
        use PrebuildState::*;
        assert!(Building.can_become(Ready));
        assert!(Building.can_become(Failed));
        assert!(Ready.can_become(Superseded));
        assert!(!Failed.can_become(Ready));
        assert!(!Superseded.can_become(Ready));
        assert!(!Ready.can_become(Building));
        for s in [Building, Ready, Failed, Superseded] {
            assert_eq!(s.as_str().parse::<PrebuildState>(), Ok(s));
        }
        assert!("stale".parse::<PrebuildState>().is_err());
    }

    #[test]
    fn config_hash_follows_what_a_prebuild_captures_but_not_secrets_or_names() {
        let spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({
            "name": "app",
            "repos": [{"url": "https://example.com/app.git", "branch": "main"}],
            "init_commands": ["make deps"],
        }))
        .expect("spec");
        let base = config_hash(&spec);
        assert_eq!(base.len(), 24);
        let mut renamed = spec.clone();
        renamed.name = "other".into();
        assert_eq!(config_hash(&renamed), base);
        let mut more_init = spec.clone();
        more_init.init_commands.push("make build".into());
        assert_ne!(config_hash(&more_init), base);
        let mut moved = spec.clone();
        moved.repos[0].branch = "dev".into();
        assert_ne!(config_hash(&moved), base);
    }

    #[test]
    fn commit_ids_are_full_hex_object_ids() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0f".repeat(32)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id(&"g".repeat(40)));
    }
}
