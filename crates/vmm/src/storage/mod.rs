//! Copy-on-write storage for sandbox disks: one trait, four backends, auto-detection.
//!
//! A sandbox's root disk is a *clone* of a base image (a raw ext4 file, or a logical
//! volume). How cheap that clone is decides how fast a sandbox (or a prebuild) can start
//! and how many fit on a host, so the way clones are made is a backend behind
//! [`StorageBackend`]:
//!
//! | backend | a clone is | clone cost | the VMM opens |
//! | --- | --- | --- | --- |
//! | [`ReflinkBackend`] | a `FICLONE` of the base on XFS (`reflink=1`) or btrfs | O(extents), ~ms, no data copied | a raw file |
//! | [`LvmThinBackend`] | a thin snapshot in an LVM thin pool | O(1), one `lvcreate` | a raw block device |
//! | [`Qcow2Backend`] | a `qemu-img` qcow2 overlay backed by the base | O(1), one `qemu-img create` | a qcow2 file (QEMU only) |
//! | [`CopyBackend`] | a sparse copy of the base | O(data) — a full copy | a raw file |
//!
//! [`detect`] picks one for a pool directory and says why (the reason is meant for
//! `atelier system`). Where the host filesystem cannot reflink, [`make_xfs_pool`] makes a
//! reflink-capable pool from a loop-mounted XFS image file.
//!
//! Every backend reports what a disk costs on its own ([`StorageBackend::disk_usage`]: the
//! blocks not shared with the base or any other clone) and what the whole pool holds
//! ([`StorageBackend::pool_usage`]), so the manager can show real numbers instead of
//! apparent file sizes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod command;
mod copy;
mod detect;
mod fsutil;
mod lvm;
mod qcow2;
mod reflink;
mod xfs;

pub use command::{CommandOutput, CommandRunner, SystemRunner};
pub use copy::CopyBackend;
pub use detect::{detect, detect_with, DetectOptions, Detected};
pub use fsutil::{extent_summary, filesystem_name, filesystem_usage, tree_usage, ExtentSummary};
pub use lvm::{LvmConfig, LvmThinBackend};
pub use qcow2::Qcow2Backend;
pub use reflink::{probe_reflink, ReflinkBackend};
pub use xfs::{make_xfs_pool, make_xfs_pool_with, mount_xfs_pool, XfsPool, MIN_XFS_POOL_BYTES};

/// Which mechanism makes clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// `FICLONE` on a reflink-capable filesystem (XFS `reflink=1`, btrfs).
    Reflink,
    /// Thin snapshots in an LVM thin pool.
    LvmThin,
    /// qcow2 overlays backed by the raw base (QEMU only).
    Qcow2,
    /// Full (sparse) copies: the fallback that always works.
    Copy,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reflink => "reflink",
            Self::LvmThin => "lvm-thin",
            Self::Qcow2 => "qcow2",
            Self::Copy => "copy",
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reflink" => Ok(Self::Reflink),
            "lvm-thin" => Ok(Self::LvmThin),
            "qcow2" => Ok(Self::Qcow2),
            "copy" => Ok(Self::Copy),
            _ => Err(format!(
                "unknown storage backend {s:?} (reflink, lvm-thin, qcow2, copy)"
            )),
        }
    }
}

/// The format of the file or device the VMM opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU's `format=` and `qemu-img -f` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// A clone made by a backend: what the VMM should open, and how. Serializable, so the
/// manager can persist it next to the sandbox and remove it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskHandle {
    /// The backend that made it (and must remove it).
    pub kind: StorageKind,
    /// The file (or block device, for `lvm-thin`) the VMM opens.
    pub path: PathBuf,
    pub format: DiskFormat,
    /// The base this disk still reads from, when it does (qcow2 overlays): the base must
    /// outlive the disk. `None` when the clone stands on its own (reflink, LVM thin
    /// snapshots and copies survive their base being removed).
    pub backing: Option<PathBuf>,
}

/// What a disk costs on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Bytes of storage that belong to this disk alone (not shared with its base or any
    /// other clone).
    pub own_bytes: u64,
    /// False when `own_bytes` is an upper bound rather than an exact figure (lvm-thin:
    /// LVM reports a thin volume's *mapped* bytes, shared ones included).
    pub exact: bool,
}

/// How full the pool that clones live in is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

impl PoolUsage {
    pub fn free_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.used_bytes)
    }
}

/// Makes and removes copy-on-write clones of base disk images.
///
/// Implementations are cheap to share (`Send + Sync`) and hold no per-disk state: a
/// [`DiskHandle`] carries everything needed to remove or measure a disk, so a restarted
/// manager can do either from a persisted handle.
pub trait StorageBackend: Send + Sync {
    fn kind(&self) -> StorageKind;

    /// Makes `dest` a copy-on-write clone of the base image `base` (a raw ext4 file, or a
    /// logical volume for `lvm-thin`). `dest` must not exist; a `dest` that exists after
    /// this returns is always complete (clones are made under a temporary name).
    /// `size_bytes`, when given, is the disk's virtual size: at least the base's (the
    /// growth is sparse; the guest may grow its filesystem into it).
    fn clone_disk(
        &self,
        base: &Path,
        dest: &Path,
        size_bytes: Option<u64>,
    ) -> Result<DiskHandle, StorageError>;

    /// Removes a disk this backend made. Removing a disk that is already gone succeeds, so
    /// cleanup after a crash can simply run again.
    fn remove(&self, disk: &DiskHandle) -> Result<(), StorageError>;

    /// The storage this disk owns on its own — blocks not shared with its base.
    fn disk_usage(&self, disk: &DiskHandle) -> Result<DiskUsage, StorageError>;

    /// Used and total bytes of the pool clones are made in.
    fn pool_usage(&self) -> Result<PoolUsage, StorageError>;
}

/// Everything that can go wrong making, removing or measuring a disk.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// The backend cannot work here (the filesystem cannot reflink, LVM is absent, …).
    #[error("the {kind} storage backend cannot work here: {reason}")]
    Unsupported { kind: StorageKind, reason: String },
    #[error("{} and {} are on different filesystems; a reflink clone must be made on the base's filesystem", .base.display(), .dest.display())]
    CrossDevice { base: PathBuf, dest: PathBuf },
    #[error("{} already exists", .0.display())]
    AlreadyExists(PathBuf),
    #[error("{} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error(
        "a disk cannot be smaller than its base: {requested} bytes asked, the base has {base}"
    )]
    InvalidSize { requested: u64, base: u64 },
    #[error("a pool needs at least {minimum} bytes, {requested} asked")]
    PoolTooSmall { requested: u64, minimum: u64 },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A handle made by another backend was given to this one.
    #[error("this is the {expected} backend; the disk {} was made by {found}", .path.display())]
    WrongBackend {
        expected: StorageKind,
        found: StorageKind,
        path: PathBuf,
    },
    /// A command the backend needs is not installed.
    #[error("{program} is not installed ({hint})")]
    MissingCommand { program: String, hint: &'static str },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
}

impl StorageError {
    /// Maps an I/O error about `path` to the most telling variant: a missing file, an
    /// existing destination, a filesystem that cannot clone, two filesystems.
    pub(crate) fn from_io(context: impl Into<String>, path: &Path, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound(path.to_path_buf()),
            io::ErrorKind::AlreadyExists => Self::AlreadyExists(path.to_path_buf()),
            _ => Self::Io {
                context: context.into(),
                source,
            },
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Fails unless `disk` was made by a backend of `kind`.
pub(crate) fn check_kind(kind: StorageKind, disk: &DiskHandle) -> Result<(), StorageError> {
    if disk.kind == kind {
        Ok(())
    } else {
        Err(StorageError::WrongBackend {
            expected: kind,
            found: disk.kind,
            path: disk.path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            StorageKind::Reflink,
            StorageKind::LvmThin,
            StorageKind::Qcow2,
            StorageKind::Copy,
        ] {
            assert_eq!(kind.as_str().parse::<StorageKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("zfs".parse::<StorageKind>().is_err());
    }

    #[test]
    fn io_errors_map_to_what_went_wrong() {
        let p = Path::new("/pool/disk.raw");
        let e = StorageError::from_io("x", p, io::Error::from(io::ErrorKind::NotFound));
        assert!(matches!(e, StorageError::NotFound(ref q) if q == p), "{e}");
        let e = StorageError::from_io("x", p, io::Error::from_raw_os_error(libc::EEXIST));
        assert!(matches!(e, StorageError::AlreadyExists(_)), "{e}");
        let e = StorageError::from_io("reading", p, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, StorageError::Io { .. }), "{e}");
        assert!(e.to_string().starts_with("reading: "), "{e}");
    }

    #[test]
    fn handles_of_another_backend_are_refused() {
        let disk = DiskHandle {
            kind: StorageKind::Qcow2,
            path: "/pool/a.qcow2".into(),
            format: DiskFormat::Qcow2,
            backing: Some("/pool/base.ext4".into()),
        };
        assert!(check_kind(StorageKind::Qcow2, &disk).is_ok());
        let e = check_kind(StorageKind::Reflink, &disk).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this is the reflink backend; the disk /pool/a.qcow2 was made by qcow2"
        );
    }

    #[test]
    fn handles_serialize_for_the_store() {
        let disk = DiskHandle {
            kind: StorageKind::LvmThin,
            path: "/dev/vg0/sb-1".into(),
            format: DiskFormat::Raw,
            backing: None,
        };
        let json = serde_json::to_value(&disk).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind":"lvm-thin","path":"/dev/vg0/sb-1","format":"raw","backing":null})
        );
        let back: DiskHandle = serde_json::from_value(json).unwrap();
        assert_eq!(back, disk);
    }
}
