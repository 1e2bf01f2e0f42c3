//! The pool step: an XFS filesystem with reflink, in a sparse file or on a device,
//! in fstab and mounted on the data directory, so that sandbox disks, snapshots and
//! their clones share blocks.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atelier_vmm::storage::{filesystem_name, MIN_XFS_POOL_BYTES};

use super::content::*;
use super::exec::{self, io_error, read_optional};
use super::plan::{Action, Check, Status};
use super::{Ctx, PoolOption};
use crate::client::ClientError;

/// The pool's size when none is asked for (the file is sparse: it costs what it holds).
const DEFAULT_POOL_BYTES: u64 = 50 << 30;

/// Done when something is mounted on the data directory and fstab mounts it there.
pub fn check(ctx: &Ctx) -> Result<Check, ClientError> {
    let data = ctx.path(DATA_DIR);
    let fstab = read_optional(&ctx.path(FSTAB))?.unwrap_or_default();
    let entry = fstab_entry(&fstab, DATA_DIR);
    let mounted = mounted_at(&data)?;
    if ctx.opts.pool == PoolOption::None {
        return Ok(Status::Skipped(no_pool(ctx, mounted.as_ref())).into());
    }
    if let Some(e) = &entry {
        if !fstab_source_is_ours(ctx, &e.source)? {
            return foreign_fstab(ctx, e, mounted.as_ref());
        }
    }
    let mut actions = vec![];
    let mut notes = vec![];
    if mounted.is_none() {
        match &ctx.opts.pool {
            PoolOption::Image { bytes } => {
                let image = ctx.path(POOL_IMAGE);
                if image.exists() {
                    let len = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
                    if bytes.is_some_and(|b| b != len) {
                        notes.push(format!(
                            "{POOL_IMAGE} exists ({}): --pool-size does not resize it",
                            human(len)
                        ));
                    }
                    match filesystem(&image)? {
                        Fs::XfsReflink => {}
                        Fs::None => actions.push(Action::Format(image)),
                        other => {
                            return Ok(Status::Conflict(format!(
                                "{POOL_IMAGE} exists and {}: init formats no file that holds \
                                 a filesystem (move it away, or use --pool-device or --no-pool)",
                                other.holds()
                            ))
                            .into())
                        }
                    }
                } else {
                    let bytes = match pool_bytes(ctx, *bytes, &mut notes)? {
                        Ok(b) => b,
                        Err(why) => return Ok(Status::Conflict(why).into()),
                    };
                    actions.push(Action::MakeImage { bytes });
                }
            }
            PoolOption::Device(dev) => match filesystem(dev)? {
                Fs::XfsReflink => {}
                Fs::None => actions.push(Action::Format(dev.clone())),
                other => {
                    return Ok(Status::Conflict(format!(
                        "{} {}: init never formats a device that holds a filesystem \
                         (wipefs it yourself if it may go)",
                        dev.display(),
                        other.holds()
                    ))
                    .into())
                }
            },
            PoolOption::None => {}
        }
        if let Some(names) = entries(&data)? {
            return Ok(hidden(&names).into());
        }
    }
    if entry.is_none() {
        if let Some(m) = &mounted {
            if !mounted_source_is_ours(ctx, &m.source)? {
                return Ok(Check {
                    status: Status::Done(format!(
                        "{} ({}) is mounted at {DATA_DIR}: init leaves storage it did not make alone",
                        m.source, m.fstype
                    )),
                    notes: vec![format!(
                        "warning: {FSTAB} does not mount it, so it will be gone after a reboot"
                    )],
                });
            }
        }
        actions.push(Action::AddFstab);
    }
    if mounted.is_none() {
        actions.push(Action::Mount);
        notes.push(
            "the steps below look again once it is mounted (the data directory is then the pool)"
                .to_owned(),
        );
    }
    let status = match (&mounted, actions.is_empty()) {
        (Some(m), true) => Status::Done(format!(
            "{} mounted at {DATA_DIR} ({}), in {FSTAB}",
            pool_source_shown(ctx),
            m.fstype
        )),
        _ => Status::ToDo(actions),
    };
    Ok(Check { status, notes })
}

/// What `--no-pool` leaves: the data directory on whatever holds it.
fn no_pool(ctx: &Ctx, mounted: Option<&Mounted>) -> String {
    let fs = match mounted {
        Some(m) => m.fstype.clone(),
        None => existing_ancestor(&ctx.path(DATA_DIR))
            .and_then(|p| filesystem_name(&p).ok())
            .unwrap_or_else(|| "an unknown filesystem".into()),
    };
    let clones = if fs == "xfs" || fs == "btrfs" {
        "which can reflink (XFS when made with reflink=1): clones then share their blocks"
    } else {
        "which cannot reflink: clones are qcow2 overlays under QEMU, full copies otherwise"
    };
    format!("--no-pool: the data directory stays on {fs}, {clones}")
}

fn foreign_fstab(
    ctx: &Ctx,
    e: &FstabEntry,
    mounted: Option<&Mounted>,
) -> Result<Check, ClientError> {
    let done = Status::Done(format!(
        "{FSTAB} mounts {} ({}) at {DATA_DIR}: init leaves storage it did not make alone",
        e.source, e.fstype
    ));
    Ok(match mounted {
        Some(_) => done.into(),
        None if !ctx.is_host => Check::from(done).note(format!(
            "it is not mounted at {}: init mounts only a pool it made inside another root",
            ctx.path(DATA_DIR).display()
        )),
        None => match entries(&ctx.path(DATA_DIR))? {
            Some(names) => hidden(&names).into(),
            // The host's own fstab line can be mounted as it stands.
            None => Status::ToDo(vec![Action::Mount]).into(),
        },
    })
}

/// The conflict of a pool that would hide files already in the data directory.
fn hidden(names: &str) -> Status {
    Status::Conflict(format!(
        "{DATA_DIR} already holds files ({names}); mounting the pool on it would hide \
         them: move them onto the pool yourself, or use --no-pool"
    ))
}

/// The pool's size: asked for, or the default, capped to the free space.
fn pool_bytes(
    ctx: &Ctx,
    asked: Option<u64>,
    notes: &mut Vec<String>,
) -> Result<Result<u64, String>, ClientError> {
    let image = ctx.path(POOL_IMAGE);
    let Some(dir) = image.parent().and_then(existing_ancestor) else {
        return Ok(Err(format!("no directory of {} exists", image.display())));
    };
    let st = nix::sys::statvfs::statvfs(&dir)
        .map_err(|e| io_error(format!("measuring {}", dir.display()))(e.into()))?;
    #[allow(clippy::unnecessary_cast)] // the widths differ between targets
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if let Some(bytes) = asked {
        if bytes > free {
            notes.push(format!(
                "warning: {} is more than the {} free on {}: the pool can fill that up before it is full",
                human(bytes),
                human(free),
                dir.display()
            ));
        }
        return Ok(Ok(bytes));
    }
    if free < MIN_XFS_POOL_BYTES {
        return Ok(Err(format!(
            "only {} is free on {}; an XFS pool needs {}: free some space, or use \
             --pool-device or --no-pool",
            human(free),
            dir.display(),
            human(MIN_XFS_POOL_BYTES)
        )));
    }
    if free < DEFAULT_POOL_BYTES {
        // Whole MiB: mkfs.xfs and people read it better.
        let bytes = free & !((1 << 20) - 1);
        notes.push(format!(
            "the pool is the {} free on {} (less than the default {}; --pool-size to choose)",
            human(bytes),
            dir.display(),
            human(DEFAULT_POOL_BYTES)
        ));
        return Ok(Ok(bytes));
    }
    Ok(Ok(DEFAULT_POOL_BYTES))
}

fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| a.exists()).map(Path::to_path_buf)
}

enum Fs {
    None,
    XfsReflink,
    XfsNoReflink,
    Other(String),
}

impl Fs {
    fn holds(&self) -> String {
        match self {
            Fs::None => "holds no filesystem".into(),
            Fs::XfsReflink => "holds XFS with reflink".into(),
            Fs::XfsNoReflink => "holds XFS without reflink (mkfs.xfs -m reflink=1)".into(),
            Fs::Other(t) => format!("holds {t}"),
        }
    }
}

/// The filesystem in an image file or on a device.
fn filesystem(path: &Path) -> Result<Fs, ClientError> {
    let args = [
        Path::new("-p"),
        Path::new("-o"),
        Path::new("value"),
        Path::new("-s"),
        Path::new("TYPE"),
        path,
    ];
    let out = exec::output("blkid", &args)?;
    let kind = match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        // 2: nothing recognized on it.
        Some(2) => return Ok(Fs::None),
        _ => return Err(exec::failed("blkid", &args, &out)),
    };
    if kind != "xfs" {
        return Ok(Fs::Other(if kind.is_empty() {
            "something blkid cannot name".into()
        } else {
            kind
        }));
    }
    let version = exec::run(
        "xfs_db",
        &[Path::new("-r"), Path::new("-c"), Path::new("version"), path],
    )?;
    Ok(if version.contains("REFLINK") {
        Fs::XfsReflink
    } else {
        Fs::XfsNoReflink
    })
}

struct Mounted {
    source: String,
    fstype: String,
}

/// What is mounted exactly at `dir`, if anything.
fn mounted_at(dir: &Path) -> Result<Option<Mounted>, ClientError> {
    let args = [
        Path::new("-n"),
        Path::new("-o"),
        Path::new("SOURCE,FSTYPE"),
        Path::new("--mountpoint"),
        dir,
    ];
    let out = exec::output("findmnt", &args)?;
    match out.status.code() {
        Some(0) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut f = text.split_whitespace();
            Ok(Some(Mounted {
                source: f.next().unwrap_or_default().to_owned(),
                fstype: f.next().unwrap_or_default().to_owned(),
            }))
        }
        Some(1) => Ok(None),
        _ => Err(exec::failed("findmnt", &args, &out)),
    }
}

/// Up to three names in `dir`, when it is not empty (a missing directory is empty).
fn entries(dir: &Path) -> Result<Option<String>, ClientError> {
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(format!("reading {}", dir.display()))(e)),
    };
    let mut names: Vec<String> = list
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(match names.len() {
        0 => None,
        n if n > 3 => Some(format!("{}, …", names[..3].join(", "))),
        _ => Some(names.join(", ")),
    })
}

fn device_uuid(dev: &Path) -> Result<Option<String>, ClientError> {
    let args = [
        Path::new("-p"),
        Path::new("-o"),
        Path::new("value"),
        Path::new("-s"),
        Path::new("UUID"),
        dev,
    ];
    let out = exec::output("blkid", &args)?;
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((out.status.success() && !uuid.is_empty()).then_some(uuid))
}

fn fstab_source_is_ours(ctx: &Ctx, source: &str) -> Result<bool, ClientError> {
    Ok(match &ctx.opts.pool {
        PoolOption::Image { .. } => source == POOL_IMAGE,
        PoolOption::Device(dev) => {
            Path::new(source) == dev.as_path()
                || device_uuid(dev)?.is_some_and(|u| source == format!("UUID={u}"))
        }
        PoolOption::None => false,
    })
}

fn mounted_source_is_ours(ctx: &Ctx, source: &str) -> Result<bool, ClientError> {
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
    };
    Ok(match &ctx.opts.pool {
        PoolOption::Image { .. } => {
            // A loop-mounted image shows as its loop device.
            let out = exec::output("losetup", &["-n", "-O", "BACK-FILE", source])?;
            let back = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            out.status.success() && same(Path::new(&back), &ctx.path(POOL_IMAGE))
        }
        PoolOption::Device(dev) => same(Path::new(source), dev),
        PoolOption::None => false,
    })
}

fn pool_source_shown(ctx: &Ctx) -> String {
    match &ctx.opts.pool {
        PoolOption::Device(d) => d.display().to_string(),
        _ => POOL_IMAGE.to_owned(),
    }
}

pub fn fstab_line_shown(ctx: &Ctx) -> String {
    match &ctx.opts.pool {
        PoolOption::Device(_) => pool_fstab_line("UUID=<its filesystem's>", false),
        _ => pool_fstab_line(POOL_IMAGE, true),
    }
}

pub fn make_image(ctx: &Ctx, bytes: u64) -> Result<String, ClientError> {
    let image = ctx.path(POOL_IMAGE);
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    }
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&image)
        .and_then(|f| f.set_len(bytes))
        .map_err(io_error(format!("making {}", image.display())));
    let formatted = made.and_then(|()| {
        exec::run(
            "mkfs.xfs",
            &[
                Path::new("-q"),
                Path::new("-m"),
                Path::new("reflink=1"),
                &image,
            ],
        )
    });
    if let Err(e) = formatted {
        // Nothing is lost: the file was made just now. A later run starts afresh.
        let _ = std::fs::remove_file(&image);
        return Err(e);
    }
    Ok(format!(
        "made {POOL_IMAGE} ({}, sparse): XFS with reflink=1",
        human(bytes)
    ))
}

pub fn add_fstab(ctx: &Ctx) -> Result<String, ClientError> {
    let line = match &ctx.opts.pool {
        PoolOption::Device(dev) => {
            // A device's name can change between boots; its filesystem's UUID cannot.
            let source = device_uuid(dev)?
                .map(|u| format!("UUID={u}"))
                .unwrap_or_else(|| dev.display().to_string());
            pool_fstab_line(&source, false)
        }
        _ => pool_fstab_line(POOL_IMAGE, true),
    };
    let path = ctx.path(FSTAB);
    let existing = read_optional(&path)?.unwrap_or_default();
    let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    exec::write_atomic(&path, fstab_with(&existing, &line).as_bytes(), mode)?;
    Ok(format!("added to {FSTAB}: {line}"))
}

pub fn mount(ctx: &Ctx) -> Result<String, ClientError> {
    let data = ctx.path(DATA_DIR);
    std::fs::create_dir_all(&data).map_err(io_error(format!("creating {}", data.display())))?;
    if ctx.is_host {
        // Through fstab: what is mounted now is what the next boot mounts.
        exec::run("mount", &[DATA_DIR])?;
    } else {
        match &ctx.opts.pool {
            PoolOption::Device(dev) => {
                exec::run("mount", &[dev.as_path(), &data])?;
            }
            _ => {
                let image = ctx.path(POOL_IMAGE);
                exec::run(
                    "mount",
                    &[Path::new("-o"), Path::new("loop"), &image, &data],
                )?;
            }
        }
    }
    Ok(format!("mounted the pool at {}", data.display()))
}
