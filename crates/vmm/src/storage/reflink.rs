//! Reflink clones: `FICLONE` on XFS (`reflink=1`) or btrfs. The clone shares every extent
//! with its base until one side writes; making it costs metadata proportional to the
//! number of extents, not to the bytes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::fsutil::{self, filesystem_name};
use super::{
    check_kind, DiskFormat, DiskHandle, DiskUsage, PoolUsage, StorageBackend, StorageError,
    StorageKind,
};

/// Clones by `FICLONE` in `pool_dir` (which must be on a reflink-capable filesystem; see
/// [`probe_reflink`] and [`super::make_xfs_pool`]).
#[derive(Debug, Clone)]
pub struct ReflinkBackend {
    pool_dir: PathBuf,
}

impl ReflinkBackend {
    /// A backend for `pool_dir`, after checking that a reflink there works.
    pub fn new(pool_dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let pool_dir = pool_dir.into();
        probe_reflink(&pool_dir)?;
        Ok(Self { pool_dir })
    }

    /// A backend for a `pool_dir` whose probe already succeeded.
    pub(crate) fn from_probed(pool_dir: &Path) -> Self {
        Self {
            pool_dir: pool_dir.to_path_buf(),
        }
    }

    pub fn pool_dir(&self) -> &Path {
        &self.pool_dir
    }
}

/// `FICLONE`: makes the empty `target` share all of `source`'s extents.
fn ficlone(source: &File, target: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its argument and touches no memory of ours.
    let rc = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE as _, source.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Maps a failed `FICLONE` to an error that says what to do about it.
fn ficlone_error(base: &Path, dest: &Path, e: io::Error) -> StorageError {
    match e.raw_os_error() {
        Some(libc::EXDEV) => StorageError::CrossDevice {
            base: base.to_path_buf(),
            dest: dest.to_path_buf(),
        },
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::ENOSYS) => {
            let fs = dest
                .parent()
                .and_then(|p| filesystem_name(p).ok())
                .unwrap_or_else(|| "this filesystem".into());
            StorageError::Unsupported {
                kind: StorageKind::Reflink,
                reason: format!(
                    "{fs} cannot reflink {} (FICLONE: {e}); use XFS with reflink=1 or btrfs",
                    dest.display()
                ),
            }
        }
        _ => StorageError::Io {
            context: format!("cloning {} to {}", base.display(), dest.display()),
            source: e,
        },
    }
}

/// Checks that `dir` can hold reflink clones, by cloning a small probe file there (the
/// probe files are removed). Creates `dir` if needed. The error says which filesystem
/// `dir` is on and why it cannot clone.
pub fn probe_reflink(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir)
        .map_err(StorageError::io(format!("creating {}", dir.display())))?;
    let src_path = fsutil::tmp_sibling(&dir.join("reflink-probe"))?;
    let dst_path = fsutil::tmp_sibling(&dir.join("reflink-probe"))?;
    let result = (|| {
        let src = fsutil::create_private(&src_path)?;
        std::os::unix::fs::FileExt::write_all_at(&src, &[0x5a; 4096], 0)
            .map_err(StorageError::io(format!("writing {}", src_path.display())))?;
        // FICLONE reads the source: it needs a descriptor open for reading.
        let src = File::open(&src_path)
            .map_err(StorageError::io(format!("opening {}", src_path.display())))?;
        let dst = fsutil::create_private(&dst_path)?;
        ficlone(&src, &dst).map_err(|e| ficlone_error(&src_path, &dst_path, e))
    })();
    let _ = std::fs::remove_file(&src_path);
    let _ = std::fs::remove_file(&dst_path);
    result
}

impl StorageBackend for ReflinkBackend {
    fn kind(&self) -> StorageKind {
        StorageKind::Reflink
    }

    fn clone_disk(
        &self,
        base: &Path,
        dest: &Path,
        size_bytes: Option<u64>,
    ) -> Result<DiskHandle, StorageError> {
        let base_len = fsutil::check_clone_paths(base, dest)?;
        let size = fsutil::clone_size(base_len, size_bytes)?;
        let source = File::open(base)
            .map_err(|e| StorageError::from_io(format!("opening {}", base.display()), base, e))?;
        let tmp = fsutil::tmp_sibling(dest)?;
        let made = (|| {
            let target = fsutil::create_private(&tmp)?;
            ficlone(&source, &target).map_err(|e| ficlone_error(base, dest, e))?;
            if size > base_len {
                target
                    .set_len(size)
                    .map_err(StorageError::io(format!("growing {}", dest.display())))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fsutil::publish(&tmp, dest)?;
        Ok(DiskHandle {
            kind: StorageKind::Reflink,
            path: dest.to_path_buf(),
            format: DiskFormat::Raw,
            backing: None,
        })
    }

    fn remove(&self, disk: &DiskHandle) -> Result<(), StorageError> {
        check_kind(StorageKind::Reflink, disk)?;
        fsutil::remove_file_idempotent(&disk.path)
    }

    /// Bytes in extents `FIEMAP` does not flag as shared: what the clone has written (or
    /// what would stay if every other file sharing its extents were removed). A fresh
    /// clone owns ~0 bytes.
    fn disk_usage(&self, disk: &DiskHandle) -> Result<DiskUsage, StorageError> {
        check_kind(StorageKind::Reflink, disk)?;
        fsutil::own_usage(&disk.path)
    }

    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        fsutil::fs_usage(&self.pool_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_errors_say_what_to_do() {
        let b = Path::new("/a/base.ext4");
        let d = Path::new("/b/disk.raw");
        let e = ficlone_error(b, d, io::Error::from_raw_os_error(libc::EXDEV));
        assert!(matches!(e, StorageError::CrossDevice { .. }), "{e}");
        assert!(e.to_string().contains("different filesystems"), "{e}");
        let e = ficlone_error(b, d, io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        assert!(
            matches!(
                e,
                StorageError::Unsupported {
                    kind: StorageKind::Reflink,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("XFS with reflink=1 or btrfs"), "{e}");
        let e = ficlone_error(b, d, io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, StorageError::Io { .. }), "{e}");
    }

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        let result = probe_reflink(&pool);
        // Either answer is fine here (the temp dir may or may not reflink), but it must
        // be a clear one, and clean.
        if let Err(e) = &result {
            assert!(
                matches!(e, StorageError::Unsupported { .. }),
                "a probe on a working directory fails only for lack of reflink: {e}"
            );
            assert!(ReflinkBackend::new(&pool).is_err());
        }
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 0);
    }
}
