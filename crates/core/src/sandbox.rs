//! The sandbox lifecycle as an explicit state machine.
//!
//! Every change of state goes through [`SandboxState::begin`] (an operation asked for by a
//! user) or [`SandboxState::settle`] (the outcome of a side effect). The server persists
//! the intermediate state *before* performing the side effect it announces, so that after a
//! crash the reconciler knows exactly what was in flight.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, ValidationErrors};

/// The state of a sandbox. `Error` carries its reason on the sandbox record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
    Destroying,
    Destroyed,
    Error,
}

/// What a user (or the reconciler) asks of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Start,
    Stop,
    Pause,
    Resume,
    Destroy,
}

/// The outcome of the side effect behind an in-flight state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// An operation that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {operation} a sandbox that is {state}")]
pub struct TransitionError {
    pub state: SandboxState,
    pub operation: &'static str,
}

impl SandboxState {
    pub const ALL: [SandboxState; 9] = [
        Self::Creating,
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Stopping,
        Self::Stopped,
        Self::Destroying,
        Self::Destroyed,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
            Self::Error => "error",
        }
    }

    /// States whose side effect is under way; a restart must finish or roll them back.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Starting | Self::Stopping | Self::Destroying
        )
    }

    /// States in which the sandbox's process is expected to be alive.
    pub fn expects_process(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// States in which the agent accepts work (exec, files, services).
    pub fn accepts_work(self) -> bool {
        self == Self::Running
    }

    /// The in-flight (or final) state entered when `op` begins from `self`.
    pub fn begin(self, op: Operation) -> Result<SandboxState, TransitionError> {
        use Operation as O;
        use SandboxState as S;
        let next = match (self, op) {
            (S::Stopped | S::Error, O::Start) => S::Starting,
            (S::Running | S::Paused, O::Stop) => S::Stopping,
            (S::Running, O::Pause) => S::Paused,
            (S::Paused, O::Resume) => S::Running,
            // Destroy is allowed from anything not already being torn down: it is the
            // way out of every stuck state, including in-flight ones after a crash.
            (S::Creating | S::Starting | S::Running | S::Paused, O::Destroy)
            | (S::Stopping | S::Stopped | S::Error, O::Destroy) => S::Destroying,
            _ => {
                return Err(TransitionError {
                    state: self,
                    operation: op.verb(),
                });
            }
        };
        Ok(next)
    }

    /// The state that follows an in-flight state once its side effect finished.
    pub fn settle(self, outcome: Outcome) -> Result<SandboxState, TransitionError> {
        use Outcome::*;
        use SandboxState as S;
        let next = match (self, outcome) {
            (S::Creating | S::Starting, Succeeded) => S::Running,
            (S::Stopping, Succeeded) => S::Stopped,
            (S::Destroying, Succeeded) => S::Destroyed,
            (S::Creating | S::Starting | S::Stopping | S::Destroying, Failed) => S::Error,
            // A running sandbox whose process died is an error too.
            (S::Running | S::Paused, Failed) => S::Error,
            _ => {
                return Err(TransitionError {
                    state: self,
                    operation: "settle",
                })
            }
        };
        Ok(next)
    }
}

impl Operation {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Destroy => "destroy",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown sandbox state {s:?}"))
    }
}

/// A request for a new sandbox, as the API takes it: every field defaults from the
/// workspace (or the built-in defaults without one).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// DNS label; defaults to the workspace's name (or `sandbox`).
    pub name: Option<String>,
    /// Workspace id or name; its resources and image are the defaults.
    pub workspace: Option<String>,
    #[schema(minimum = 1, maximum = 8)]
    pub vcpus: Option<u32>,
    #[schema(minimum = 512, maximum = 16384)]
    pub memory_mib: Option<u32>,
    pub disk_mib: Option<u32>,
    pub image: Option<String>,
    /// Start as a clone of the workspace's ready prebuild. Default: when one fits (same
    /// driver, image and machine size), else boot cold; `true` requires one (409 if
    /// none fits); `false` always boots cold.
    pub prebuild: Option<bool>,
    /// Host folders shared into the sandbox (at most 8). A sandbox with
    /// any boots cold: a prebuild's snapshot cannot carry a host folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_folders: Vec<SharedFolder>,
}

/// A directory of the manager's host shared into a sandbox, live: what either side
/// writes the other sees at once. Only that directory is exposed, nothing above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedFolder {
    /// An existing directory on the manager's host, as an absolute path.
    #[schema(example = "/srv/app")]
    pub host_path: String,
    /// Where the sandbox sees it: an absolute path, not `/` nor under a system
    /// directory (`/proc`, `/sys`, `/dev`, `/run`, `/tmp`, `/etc`, `/usr`, `/bin`…).
    #[schema(example = "/workspace")]
    pub guest_path: String,
    /// Mounted read-only in the sandbox.
    #[serde(default)]
    pub read_only: bool,
}

impl SharedFolder {
    /// Most folders one sandbox may have.
    pub const MAX: usize = 8;

    /// Guest paths a folder may not cover: the system's own trees.
    const RESERVED: [&'static str; 13] = [
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys",
        "/tmp", "/usr", "/var",
    ];

    /// Checks the shape of every folder (`field` names the list, e.g. `shared_folders`):
    /// absolute, normal paths without commas (they separate hypervisor options), distinct
    /// guest paths. Whether the host directory exists is the caller's to check, on the
    /// host that will share it.
    pub fn validate_all(field: &str, folders: &[SharedFolder], errors: &mut ValidationErrors) {
        if folders.len() > Self::MAX {
            errors.push(FieldError::new(
                field,
                format!("at most {} folders, got {}", Self::MAX, folders.len()),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in folders.iter().enumerate() {
            let at = |name: &str| format!("{field}[{i}].{name}");
            if let Err(why) = normal_absolute(&f.host_path) {
                errors.push(FieldError::new(at("host_path"), why));
            }
            match normal_absolute(&f.guest_path) {
                Err(why) => errors.push(FieldError::new(at("guest_path"), why)),
                Ok(()) if f.guest_path == "/" => {
                    errors.push(FieldError::new(at("guest_path"), "must not be /"))
                }
                Ok(()) => {
                    let reserved = Self::RESERVED.iter().find(|r| {
                        f.guest_path == **r || f.guest_path.starts_with(&format!("{r}/"))
                    });
                    if let Some(r) = reserved {
                        errors.push(FieldError::new(
                            at("guest_path"),
                            format!("must not be under the system directory {r}"),
                        ));
                    } else if !seen.insert(f.guest_path.trim_end_matches('/').to_owned()) {
                        errors.push(FieldError::new(
                            at("guest_path"),
                            format!("{} is shared twice", f.guest_path),
                        ));
                    }
                }
            }
        }
    }
}

/// `Ok` for an absolute path made of plain components (no `.`, `..`, empty parts or
/// commas), at most 1024 bytes.
fn normal_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("must be an absolute path, got {path:?}"));
    }
    if path.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    if path.contains(',') || path.contains('\0') {
        return Err("must not contain a comma or a NUL byte".into());
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "must be a normal path (no empty, `.` or `..` parts), got {path:?}"
        ));
    }
    Ok(())
}

/// CPU, memory and disk given to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Virtual CPUs, 1–8.
    #[schema(minimum = 1, maximum = 8, example = 2)]
    pub vcpus: u32,
    /// Memory in MiB, 512–16384.
    #[schema(minimum = 512, maximum = 16384, example = 2048)]
    pub memory_mib: u32,
    /// Disk size in MiB, 256–1048576.
    #[schema(minimum = 256, maximum = 1048576, example = 10240)]
    pub disk_mib: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            vcpus: 2,
            memory_mib: 2048,
            disk_mib: 10 * 1024,
        }
    }
}

impl Resources {
    pub const VCPUS: (u32, u32) = (1, 8);
    pub const MEMORY_MIB: (u32, u32) = (512, 16 * 1024);
    pub const DISK_MIB: (u32, u32) = (256, 1024 * 1024);

    /// Checks every bound; field names are prefixed with `prefix` (e.g. `resources`).
    pub fn validate(&self, prefix: &str, errors: &mut ValidationErrors) {
        let mut check = |name: &str, value: u32, (lo, hi): (u32, u32), unit: &str| {
            if value < lo || value > hi {
                errors.push(FieldError::new(
                    format!("{prefix}.{name}"),
                    format!("must be between {lo} and {hi}{unit}, got {value}"),
                ));
            }
        };
        check("vcpus", self.vcpus, Self::VCPUS, "");
        check("memory_mib", self.memory_mib, Self::MEMORY_MIB, " MiB");
        check("disk_mib", self.disk_mib, Self::DISK_MIB, " MiB");
    }
}

/// Checks a sandbox name: a DNS label, since it appears in `<name>-<id>.<domain>`.
pub fn validate_name(field: &str, name: &str, errors: &mut ValidationErrors) {
    if name.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if name.len() > 40 {
        errors.push(FieldError::new(field, "must be at most 40 characters"));
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        errors.push(FieldError::new(
            field,
            "must be lowercase letters, digits and inner hyphens (it becomes part of a host name)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation as O;
    use SandboxState as S;

    #[test]
    fn the_happy_lifecycle_is_legal() {
        let mut s = S::Creating;
        s = s.settle(Outcome::Succeeded).unwrap();
        assert_eq!(s, S::Running);
        s = s.begin(O::Pause).unwrap();
        assert_eq!(s, S::Paused);
        s = s.begin(O::Resume).unwrap();
        s = s.begin(O::Stop).unwrap();
        assert_eq!(s, S::Stopping);
        s = s.settle(Outcome::Succeeded).unwrap();
        assert_eq!(s, S::Stopped);
        s = s.begin(O::Start).unwrap();
        assert_eq!(s, S::Starting);
        s = s.settle(Outcome::Succeeded).unwrap();
        s = s.begin(O::Destroy).unwrap();
        assert_eq!(s, S::Destroying);
        assert_eq!(s.settle(Outcome::Succeeded).unwrap(), S::Destroyed);
    }

    #[test]
    fn illegal_operations_are_refused() {
        assert!(S::Stopped.begin(O::Stop).is_err());
        assert!(S::Running.begin(O::Start).is_err());
        assert!(S::Stopped.begin(O::Pause).is_err());
        assert!(S::Running.begin(O::Resume).is_err());
        assert!(S::Destroyed.begin(O::Destroy).is_err());
        assert!(S::Destroying.begin(O::Destroy).is_err());
        assert!(S::Destroyed.begin(O::Start).is_err());
        let err = S::Stopped.begin(O::Stop).unwrap_err();
        assert_eq!(err.to_string(), "cannot stop a sandbox that is stopped");
    }

    #[test]
    fn every_in_flight_state_can_fail_into_error_and_be_destroyed() {
        for s in S::ALL.into_iter().filter(|s| s.is_in_flight()) {
            assert_eq!(s.settle(Outcome::Failed).unwrap(), S::Error, "{s}");
            if s != S::Destroying {
                assert_eq!(s.begin(O::Destroy).unwrap(), S::Destroying, "{s}");
            }
        }
        assert_eq!(S::Error.begin(O::Start).unwrap(), S::Starting);
    }

    #[test]
    fn settled_states_cannot_settle_again() {
        for s in [S::Stopped, S::Destroyed, S::Error] {
            assert!(s.settle(Outcome::Succeeded).is_err(), "{s}");
        }
    }

    #[test]
    fn states_round_trip_through_strings() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("bogus".parse::<S>().is_err());
    }

    #[test]
    fn resources_bounds_name_the_field() {
        let mut errors = ValidationErrors::default();
        Resources {
            vcpus: 9,
            memory_mib: 256,
            disk_mib: 1024,
        }
        .validate("resources", &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["resources.vcpus", "resources.memory_mib"]);
        let mut ok = ValidationErrors::default();
        Resources::default().validate("resources", &mut ok);
        assert!(ok.is_empty());
    }

    #[test]
    fn names_must_be_dns_labels() {
        for (name, ok) in [
            ("web", true),
            ("a-1", true),
            ("", false),
            ("-a", false),
            ("A", false),
            ("a_b", false),
        ] {
            let mut errors = ValidationErrors::default();
            validate_name("name", name, &mut errors);
            assert_eq!(errors.is_empty(), ok, "{name:?}");
        }
    }

    fn folder(host: &str, guest: &str) -> SharedFolder {
        SharedFolder {
            host_path: host.into(),
            guest_path: guest.into(),
            read_only: false,
        }
    }

    fn folder_errors(folders: &[SharedFolder]) -> Vec<String> {
        let mut errors = ValidationErrors::default();
        SharedFolder::validate_all("shared_folders", folders, &mut errors);
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn shared_folders_need_normal_absolute_paths_outside_the_system() {
        assert!(folder_errors(&[folder("/srv/app", "/workspace")]).is_empty());
        assert!(folder_errors(&[folder("/srv/app/", "/home/dev/src/")]).is_empty());
        let errors = folder_errors(&[
            folder("srv/app", "/workspace"),
            folder("/srv/a,b", "workspace"),
            folder("/srv/../etc", "/"),
            folder("/srv/app", "/etc/app"),
            folder("/srv/app", "/proc"),
            folder("/srv/app", "/data"),
            folder("/srv/other", "/data/"),
        ]);
        assert_eq!(
            errors,
            [
                "shared_folders[0].host_path: must be an absolute path, got \"srv/app\"",
                "shared_folders[1].host_path: must not contain a comma or a NUL byte",
                "shared_folders[1].guest_path: must be an absolute path, got \"workspace\"",
                "shared_folders[2].host_path: must be a normal path (no empty, `.` or `..` parts), got \"/srv/../etc\"",
                "shared_folders[2].guest_path: must not be /",
                "shared_folders[3].guest_path: must not be under the system directory /etc",
                "shared_folders[4].guest_path: must not be under the system directory /proc",
                "shared_folders[6].guest_path: /data/ is shared twice",
            ]
        );
        let many = vec![folder("/srv/app", "/w"); SharedFolder::MAX + 1];
        assert!(folder_errors(&many)[0].starts_with("shared_folders: at most 8 folders"));
    }
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sandbox {
    pub id: crate::SandboxId,
    pub name: String,
    pub workspace_id: Option<crate::WorkspaceId>,
    pub state: SandboxState,
    /// Why the sandbox is in `error` (or why its last operation failed).
    pub error: Option<String>,
    /// The hypervisor driver that runs it: `local`, `qemu` or `firecracker`.
    pub driver: String,
    pub resources: Resources,
    pub image: String,
    /// The prebuild it was cloned from; `None` for a sandbox that booted cold.
    #[serde(default)]
    pub prebuild_id: Option<String>,
    /// Host folders shared into it.
    #[serde(default)]
    pub shared_folders: Vec<SharedFolder>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}
