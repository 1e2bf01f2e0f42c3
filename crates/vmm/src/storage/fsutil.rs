//! Filesystem plumbing the file-based backends share: `FIEMAP` extent accounting, `statvfs`
//! pool usage, filesystem names, and publishing a finished disk under its name.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DiskUsage, PoolUsage, StorageError};

// From <linux/fiemap.h> and <linux/fs.h>; the libc crate does not carry them.
const FS_IOC_FIEMAP: u64 = 0xC020_660B; // _IOWR('f', 11, struct fiemap)
const FIEMAP_FLAG_SYNC: u32 = 0x0000_0001;
const FIEMAP_EXTENT_LAST: u32 = 0x0000_0001;
const FIEMAP_EXTENT_SHARED: u32 = 0x0000_2000;
/// Extents asked for per `FIEMAP` call.
const BATCH: usize = 256;

#[repr(C)]
#[derive(Default)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
struct FiemapRequest {
    header: FiemapHeader,
    extents: [FiemapExtent; BATCH],
}

/// How a file's data lies on disk, from `FIEMAP`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtentSummary {
    /// Extents holding data (or reserved for it).
    pub extents: u64,
    /// Bytes in extents the filesystem flags as shared with another file (reflinks).
    pub shared_bytes: u64,
    /// Bytes in extents that belong to this file alone.
    pub own_bytes: u64,
}

/// Walks the extents of the file at `path` with `FIEMAP` (after flushing its dirty pages,
/// so that a copy-on-write that is still in the page cache is counted where it will
/// land). Fails with `Unsupported`-kind I/O errors on filesystems without `FIEMAP`.
pub fn extent_summary(path: &Path) -> io::Result<ExtentSummary> {
    let file = File::open(path)?;
    let mut summary = ExtentSummary::default();
    let mut req = Box::new(FiemapRequest {
        header: FiemapHeader::default(),
        extents: [FiemapExtent::default(); BATCH],
    });
    let mut start = 0u64;
    loop {
        req.header = FiemapHeader {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: BATCH as u32,
            fm_reserved: 0,
        };
        // SAFETY: `req` is a properly laid out `struct fiemap` followed by room for
        // `fm_extent_count` extents, alive and exclusively borrowed for the call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_FIEMAP as _,
                std::ptr::addr_of_mut!(*req),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mapped = (req.header.fm_mapped_extents as usize).min(BATCH);
        if mapped == 0 {
            return Ok(summary);
        }
        let mut last = false;
        for e in &req.extents[..mapped] {
            summary.extents += 1;
            if e.fe_flags & FIEMAP_EXTENT_SHARED != 0 {
                summary.shared_bytes += e.fe_length;
            } else {
                summary.own_bytes += e.fe_length;
            }
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let tail = &req.extents[mapped - 1];
        let next = tail.fe_logical.saturating_add(tail.fe_length);
        if last || next <= start {
            return Ok(summary);
        }
        start = next;
    }
}

/// What a file owns on its own: unshared extents by `FIEMAP`, or — on a filesystem
/// without `FIEMAP` — its allocated blocks (nothing can be shared there either).
pub(crate) fn own_usage(path: &Path) -> Result<DiskUsage, StorageError> {
    match extent_summary(path) {
        Ok(s) => Ok(DiskUsage {
            own_bytes: s.own_bytes,
            exact: true,
        }),
        Err(e) if is_unsupported(&e) => {
            let md = std::fs::metadata(path).map_err(|e| {
                StorageError::from_io(format!("inspecting {}", path.display()), path, e)
            })?;
            Ok(DiskUsage {
                own_bytes: md.blocks() * 512,
                exact: true,
            })
        }
        Err(e) => Err(StorageError::from_io(
            format!("mapping the extents of {}", path.display()),
            path,
            e,
        )),
    }
}

/// True for the errors a filesystem gives for an ioctl it does not implement.
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::ENOSYS)
    )
}

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Used and total bytes of the filesystem holding `path`.
pub(crate) fn fs_usage(path: &Path) -> Result<PoolUsage, StorageError> {
    let st = statvfs(path)
        .map_err(|e| StorageError::from_io(format!("measuring {}", path.display()), path, e))?;
    let frsize = st.f_frsize as u64;
    let total = (st.f_blocks as u64).saturating_mul(frsize);
    let free = (st.f_bfree as u64).saturating_mul(frsize);
    Ok(PoolUsage {
        used_bytes: total.saturating_sub(free),
        total_bytes: total,
    })
}

/// What the files under `dir` cost on their own: for each regular file, the bytes of
/// its extents not shared with another file (so a reflinked clone counts only what it
/// rewrote, a qcow2 overlay only its written clusters); allocated blocks where the
/// filesystem cannot tell (`exact` is then false). Symlinks are not followed.
pub fn tree_usage(dir: &Path) -> DiskUsage {
    let mut usage = DiskUsage {
        own_bytes: 0,
        exact: true,
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                match extent_summary(&entry.path()) {
                    Ok(e) => usage.own_bytes += e.own_bytes,
                    Err(_) => {
                        usage.own_bytes += meta.blocks() * 512;
                        usage.exact = false;
                    }
                }
            }
        }
    }
    usage
}

/// Used and total bytes of the filesystem holding `path`.
pub fn filesystem_usage(path: &Path) -> Result<PoolUsage, StorageError> {
    fs_usage(path)
}

/// The name of the filesystem holding `path` (`xfs`, `btrfs`, `ext4`, …), or its magic
/// number in hex when it is not one we know.
pub fn filesystem_name(path: &Path) -> io::Result<String> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let magic = (st.f_type as u64) & 0xffff_ffff;
    Ok(match magic {
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0xef53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0xf2f5_2010 => "f2fs".into(),
        0x0102_1997 => "9p".into(),
        other => format!("filesystem 0x{other:x}"),
    })
}

/// A fresh temporary name next to `dest` (same directory, so same filesystem).
pub(crate) fn tmp_sibling(dest: &Path) -> Result<PathBuf, StorageError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().ok_or_else(|| StorageError::InvalidName {
        what: "disk path",
        value: dest.display().to_string(),
        reason: "it names no file".into(),
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(dest.with_file_name(tmp))
}

/// Creates `path` for writing, mode 0600 (a disk holds the sandbox's data), failing if it
/// exists.
pub(crate) fn create_private(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            // A missing file here means a missing directory: name that, not our file.
            let missing = path
                .parent()
                .filter(|_| e.kind() == io::ErrorKind::NotFound);
            StorageError::from_io(
                format!("creating {}", path.display()),
                missing.unwrap_or(path),
                e,
            )
        })
}

/// Gives the finished file `tmp` its final name `dest` without ever replacing an existing
/// `dest` (a hard link fails if it exists), then drops the temporary name. On failure the
/// temporary file is removed.
pub(crate) fn publish(tmp: &Path, dest: &Path) -> Result<(), StorageError> {
    let linked = std::fs::hard_link(tmp, dest);
    let _ = std::fs::remove_file(tmp);
    linked.map_err(|e| StorageError::from_io(format!("naming {}", dest.display()), dest, e))
}

/// Removes the file at `path`; a file that is already gone is fine.
pub(crate) fn remove_file_idempotent(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io {
            context: format!("removing {}", path.display()),
            source: e,
        }),
    }
}

/// Checks `dest` is free and returns the base's length, with clear errors for a missing
/// base or a taken destination.
pub(crate) fn check_clone_paths(base: &Path, dest: &Path) -> Result<u64, StorageError> {
    let md = std::fs::metadata(base)
        .map_err(|e| StorageError::from_io(format!("inspecting {}", base.display()), base, e))?;
    if !md.is_file() {
        return Err(StorageError::InvalidName {
            what: "base image",
            value: base.display().to_string(),
            reason: "it is not a regular file".into(),
        });
    }
    if dest.symlink_metadata().is_ok() {
        return Err(StorageError::AlreadyExists(dest.to_path_buf()));
    }
    Ok(md.len())
}

/// The virtual size a clone gets: `requested` if given (never below the base's size).
pub(crate) fn clone_size(base_len: u64, requested: Option<u64>) -> Result<u64, StorageError> {
    match requested {
        Some(r) if r < base_len => Err(StorageError::InvalidSize {
            requested: r,
            base: base_len,
        }),
        Some(r) => Ok(r),
        None => Ok(base_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_fiemap_structs_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<FiemapHeader>(), 32);
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
        // _IOWR('f', 11, struct fiemap): dir=3 (read|write), size=32, type='f', nr=11.
        assert_eq!(
            FS_IOC_FIEMAP,
            (3 << 30) | (32 << 16) | ((b'f' as u64) << 8) | 11
        );
    }

    #[test]
    fn extents_of_a_plain_file_are_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 1 << 20], 0).unwrap();
        f.write_all_at(&[7u8; 1 << 20], 32 << 20).unwrap();
        drop(f);
        match extent_summary(&p) {
            Ok(s) => {
                assert!(s.extents >= 2, "{s:?}");
                assert_eq!(s.shared_bytes, 0);
                assert!(
                    (2 << 20..4 << 20).contains(&s.own_bytes),
                    "2 MiB written in a 64 MiB sparse file: {s:?}"
                );
            }
            Err(e) if is_unsupported(&e) => atelier_testkit::skip(format!("no FIEMAP here ({e})")),
            Err(e) => panic!("{e}"),
        }
        let u = own_usage(&p).unwrap();
        assert!((2 << 20..4 << 20).contains(&u.own_bytes), "{u:?}");
    }

    #[test]
    fn sizes_never_shrink_the_base() {
        assert_eq!(clone_size(100, None).unwrap(), 100);
        assert_eq!(clone_size(100, Some(200)).unwrap(), 200);
        let e = clone_size(100, Some(50)).unwrap_err();
        assert!(matches!(
            e,
            StorageError::InvalidSize {
                requested: 50,
                base: 100
            }
        ));
    }

    #[test]
    fn publishing_never_replaces_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("disk.raw");
        let tmp = tmp_sibling(&dest).unwrap();
        assert_eq!(tmp.parent(), dest.parent());
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::write(&dest, b"old").unwrap();
        let e = publish(&tmp, &dest).unwrap_err();
        assert!(matches!(e, StorageError::AlreadyExists(_)), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert!(!tmp.exists(), "the temporary file is cleaned up");
        remove_file_idempotent(&dest).unwrap();
        remove_file_idempotent(&dest).unwrap();
        let missing = dir.path().join("no-such-dir");
        let e = create_private(&missing.join("disk.raw")).unwrap_err();
        assert!(
            matches!(e, StorageError::NotFound(ref p) if *p == missing),
            "{e}"
        );
    }

    #[test]
    fn the_pool_usage_is_the_filesystem_s() {
        let dir = tempfile::tempdir().unwrap();
        let u = fs_usage(dir.path()).unwrap();
        assert!(u.total_bytes > 0 && u.used_bytes <= u.total_bytes, "{u:?}");
        assert!(!filesystem_name(dir.path()).unwrap().is_empty());
        assert!(fs_usage(&dir.path().join("missing")).is_err());
    }
}
