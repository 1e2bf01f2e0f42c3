//! What a run of `atelier init` is made of: steps, what looking at one found
//! ([`Check`]), and the changes it would make ([`Action`]), each described before it is
//! made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::content::*;
use super::exec::{self, io_error};
use super::{pool, steps, Ctx};
use crate::client::ClientError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StepId {
    Packages,
    Kvm,
    Pool,
    User,
    DataDir,
    Config,
    Binaries,
    Unit,
    Enable,
    Caddy,
    Service,
}

impl StepId {
    /// In the order they are applied: later steps build on earlier ones (the data
    /// directory's files go onto the mounted pool; the service starts last).
    pub const ALL: [StepId; 11] = [
        StepId::Packages,
        StepId::Kvm,
        StepId::Pool,
        StepId::User,
        StepId::DataDir,
        StepId::Config,
        StepId::Binaries,
        StepId::Unit,
        StepId::Enable,
        StepId::Caddy,
        StepId::Service,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StepId::Packages => "packages",
            StepId::Kvm => "kvm",
            StepId::Pool => "pool",
            StepId::User => "user",
            StepId::DataDir => "data dir",
            StepId::Config => "config",
            StepId::Binaries => "binaries",
            StepId::Unit => "unit",
            StepId::Enable => "enable",
            StepId::Caddy => "caddy",
            StepId::Service => "service",
        }
    }
}

pub enum Status {
    Done(String),
    ToDo(Vec<Action>),
    Skipped(String),
    /// Something init will not change by itself (it would lose or hide what is there).
    Conflict(String),
    /// A finding that changes nothing (the KVM verdict).
    Verdict(String),
}

pub struct Check {
    pub status: Status,
    /// Warnings and remarks shown under the step.
    pub notes: Vec<String>,
}

impl From<Status> for Check {
    fn from(status: Status) -> Self {
        Check {
            status,
            notes: vec![],
        }
    }
}

impl Check {
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// What the steps before one found: those that change something (planned, or
/// applied), and those left in conflict.
#[derive(Default)]
pub struct Before {
    pub changing: BTreeSet<StepId>,
    pub conflicts: BTreeSet<StepId>,
}

/// One change, described before it is made.
pub enum Action {
    Install(Vec<String>),
    MakeImage {
        bytes: u64,
    },
    /// mkfs.xfs on a device or an image that holds no filesystem.
    Format(PathBuf),
    AddFstab,
    Mount,
    AddUser {
        group_exists: bool,
    },
    DataDir,
    Write {
        path: &'static str,
        text: String,
        mode: u32,
        what: String,
    },
    MoveAside {
        path: &'static str,
        to: String,
    },
    Copy {
        from: PathBuf,
        to: &'static str,
        what: String,
    },
    Enable,
    DaemonReload,
    Start,
    Restart,
    ReloadCaddy,
}

impl Action {
    pub fn describe(&self, ctx: &Ctx) -> String {
        match self {
            Action::Install(p) => format!(
                "install {} (apt-get install -y{})",
                p.join(", "),
                if ctx.is_host {
                    String::new()
                } else {
                    format!(", through chroot {}", ctx.root.display())
                }
            ),
            Action::MakeImage { bytes } => format!(
                "make {POOL_IMAGE}, a sparse file of {}, and format it: mkfs.xfs -m reflink=1",
                human(*bytes)
            ),
            Action::Format(p) => format!(
                "format {} (it holds no filesystem): mkfs.xfs -m reflink=1",
                p.display()
            ),
            Action::AddFstab => format!("add to {FSTAB}: {}", pool::fstab_line_shown(ctx)),
            Action::Mount if ctx.is_host => format!("mount it at {DATA_DIR} (mount {DATA_DIR})"),
            Action::Mount => format!(
                "mount it at {} now, so that the data directory's files land on the pool \
                 (unmount it before the root)",
                ctx.path(DATA_DIR).display()
            ),
            Action::AddUser { .. } => format!(
                "add the system user {USER} (useradd --system: home {DATA_DIR}, no login shell)"
            ),
            Action::DataDir => format!("make {DATA_DIR} owned by {USER}:{USER}, mode 0750"),
            Action::Write { what, .. } | Action::Copy { what, .. } => what.clone(),
            Action::MoveAside { path, to } => {
                format!("keep the {path} that init did not write as {to}")
            }
            Action::Enable => match steps::enable_command(ctx) {
                Some(args) => format!("enable it: systemctl {}", args.join(" ")),
                None => format!(
                    "enable it: link {WANTS_LINK} → {UNIT} (systemctl is not installed)"
                ),
            },
            Action::DaemonReload => "systemctl daemon-reload".into(),
            Action::Start => format!("start it: systemctl start {UNIT_NAME}"),
            Action::Restart => format!(
                "restart it (changed above; the sandboxes keep running): systemctl restart {UNIT_NAME}"
            ),
            Action::ReloadCaddy => "reload Caddy: systemctl reload-or-restart caddy.service".into(),
        }
    }

    /// Makes the change; says what was done.
    pub fn run(&self, ctx: &Ctx) -> Result<String, ClientError> {
        match self {
            Action::Install(p) => steps::install(ctx, p),
            Action::MakeImage { bytes } => pool::make_image(ctx, *bytes),
            Action::Format(p) => {
                exec::run(
                    "mkfs.xfs",
                    &[Path::new("-q"), Path::new("-m"), Path::new("reflink=1"), p],
                )?;
                Ok(format!("formatted {}: XFS with reflink=1", p.display()))
            }
            Action::AddFstab => pool::add_fstab(ctx),
            Action::Mount => pool::mount(ctx),
            Action::AddUser { group_exists } => steps::add_user(ctx, *group_exists),
            Action::DataDir => steps::make_data_dir(ctx),
            Action::Write {
                path, text, mode, ..
            } => {
                exec::write_atomic(&ctx.path(path), text.as_bytes(), *mode)?;
                Ok(format!("wrote {path}"))
            }
            Action::MoveAside { path, to } => {
                let (from, dest) = (ctx.path(path), ctx.path(to));
                std::fs::rename(&from, &dest).map_err(io_error(format!(
                    "renaming {} to {}",
                    from.display(),
                    dest.display()
                )))?;
                Ok(format!("kept the former {path} as {to}"))
            }
            Action::Copy { from, to, .. } => {
                exec::copy_atomic(from, &ctx.path(to), 0o755)?;
                Ok(format!("installed {} as {to}", from.display()))
            }
            Action::Enable => steps::enable_unit(ctx),
            Action::DaemonReload => systemctl(&["daemon-reload"], "reloaded systemd's units"),
            Action::Start => systemctl(&["start", UNIT_NAME], "started atelier.service"),
            Action::Restart => systemctl(&["restart", UNIT_NAME], "restarted atelier.service"),
            Action::ReloadCaddy => {
                systemctl(&["reload-or-restart", "caddy.service"], "reloaded Caddy")
            }
        }
    }
}

fn systemctl(args: &[&str], done: &str) -> Result<String, ClientError> {
    exec::run("systemctl", args)?;
    Ok(done.to_owned())
}
