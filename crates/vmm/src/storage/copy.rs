//! The fallback: every clone is a full (sparse) copy of its base. Always works, costs the
//! base's data in time and space for every disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use super::fsutil;
use super::{
    check_kind, DiskFormat, DiskHandle, DiskUsage, PoolUsage, StorageBackend, StorageError,
    StorageKind,
};

/// Clones by copying the base's data (holes stay holes) into `pool_dir`.
#[derive(Debug, Clone)]
pub struct CopyBackend {
    pool_dir: PathBuf,
}

impl CopyBackend {
    pub fn new(pool_dir: impl Into<PathBuf>) -> Self {
        Self {
            pool_dir: pool_dir.into(),
        }
    }

    pub fn pool_dir(&self) -> &Path {
        &self.pool_dir
    }
}

static WARNED: Once = Once::new();

fn warn_once(pool_dir: &Path) {
    WARNED.call_once(|| {
        tracing::warn!(
            pool = %pool_dir.display(),
            "disk clones are full copies here (no reflink, LVM thin pool or qcow2): each \
             sandbox costs its whole image in time and space; an XFS (reflink=1) or btrfs \
             pool makes clones instant"
        );
    });
}

/// The next data extent `[start, end)` of `file` at or after `offset`, or `None` past
/// the last one. Filesystems without hole reporting describe the rest as data.
fn data_extent(file: &File, offset: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    // SAFETY: lseek on an open descriptor only moves its file offset, which nothing of
    // ours relies on (all I/O here is positional).
    let start = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(Some((offset, len))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    let start = u64::try_from(start).unwrap_or(len);
    let end = u64::try_from(end).map_or(len, |e| e.min(len));
    Ok((start < end).then_some((start, end)))
}

/// Copies `[start, end)` of `src` to the same offsets of `dst`: in the kernel with
/// `copy_file_range` where it can (and `kernel` allows), else through a buffer. Returns early if `src` shrank.
fn copy_range(src: &File, dst: &File, start: u64, end: u64, mut kernel: bool) -> io::Result<()> {
    let mut at = start;
    let mut buf = Vec::new();
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 30);
        if kernel {
            let mut off_in = libc::loff_t::try_from(at)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut off_out = off_in;
            // SAFETY: both descriptors are open; the offsets are valid out-pointers for
            // the duration of the call; no user memory is read or written.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n > 0 {
                at += n as u64;
                continue;
            }
            if n == 0 {
                return Ok(()); // end of file: it shrank under us
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                    kernel = false;
                    continue;
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; 1 << 20];
        }
        let n = want.min(buf.len());
        let got = src.read_at(&mut buf[..n], at)?;
        if got == 0 {
            return Ok(());
        }
        dst.write_all_at(&buf[..got], at)?;
        at += got as u64;
    }
    Ok(())
}

/// Copies the data of `src` into the empty `dst`, leaving `src`'s holes as holes.
pub(crate) fn sparse_copy(src: &File, dst: &File) -> io::Result<()> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut offset = 0;
    while offset < len {
        let Some((start, end)) = data_extent(src, offset, len)? else {
            break;
        };
        copy_range(src, dst, start, end, true)?;
        offset = end;
    }
    Ok(())
}

impl StorageBackend for CopyBackend {
    fn kind(&self) -> StorageKind {
        StorageKind::Copy
    }

    fn clone_disk(
        &self,
        base: &Path,
        dest: &Path,
        size_bytes: Option<u64>,
    ) -> Result<DiskHandle, StorageError> {
        warn_once(&self.pool_dir);
        let base_len = fsutil::check_clone_paths(base, dest)?;
        let size = fsutil::clone_size(base_len, size_bytes)?;
        let source = File::open(base)
            .map_err(|e| StorageError::from_io(format!("opening {}", base.display()), base, e))?;
        let tmp = fsutil::tmp_sibling(dest)?;
        let made = (|| {
            let target = fsutil::create_private(&tmp)?;
            let context = || format!("copying {} to {}", base.display(), dest.display());
            sparse_copy(&source, &target).map_err(StorageError::io(context()))?;
            if size > base_len {
                target.set_len(size).map_err(StorageError::io(context()))?;
            }
            target.sync_all().map_err(StorageError::io(context()))
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fsutil::publish(&tmp, dest)?;
        Ok(DiskHandle {
            kind: StorageKind::Copy,
            path: dest.to_path_buf(),
            format: DiskFormat::Raw,
            backing: None,
        })
    }

    fn remove(&self, disk: &DiskHandle) -> Result<(), StorageError> {
        check_kind(StorageKind::Copy, disk)?;
        fsutil::remove_file_idempotent(&disk.path)
    }

    /// The copy's unshared extents: all of its data (unless the filesystem deduplicated
    /// it behind our back, which `FIEMAP` would show).
    fn disk_usage(&self, disk: &DiskHandle) -> Result<DiskUsage, StorageError> {
        check_kind(StorageKind::Copy, disk)?;
        fsutil::own_usage(&disk.path)
    }

    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        fsutil::fs_usage(&self.pool_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_keep_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("base");
        let f = File::create(&src).unwrap();
        f.set_len(48 << 20).unwrap();
        f.write_all_at(b"superblock", 1024).unwrap();
        f.write_all_at(&[1u8; 3 << 20], 20 << 20).unwrap();
        f.write_all_at(b"tail", (48 << 20) - 4).unwrap();
        drop(f);
        let dst = dir.path().join("copy");
        let out = fsutil::create_private(&dst).unwrap();
        sparse_copy(&File::open(&src).unwrap(), &out).unwrap();
        drop(out);
        assert!(std::fs::read(&src).unwrap() == std::fs::read(&dst).unwrap());
        let allocated = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(
            allocated < 8 << 20,
            "holes stay holes: {allocated} bytes allocated"
        );
    }

    #[test]
    fn a_buffered_copy_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("base");
        let data: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let dst = dir.path().join("copy");
        let out = fsutil::create_private(&dst).unwrap();
        out.set_len(data.len() as u64).unwrap();
        let f = File::open(&src).unwrap();
        copy_range(&f, &out, 0, data.len() as u64, false).unwrap();
        drop(out);
        assert!(std::fs::read(&dst).unwrap() == data);
    }
}
