//! The root filesystem a Firecracker sandbox boots from: its copy of the image's disk
//! (the raw config disk is [`crate::guest`]'s).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::driver::VmmError;
use crate::guest::tmp_path;

/// Copies `src` to `dst` (which must not exist, and is created 0600), as a reflink
/// (`FICLONE`: a copy-on-write clone on btrfs and XFS) when the filesystem can, else as a
/// sparse copy (holes and zero blocks are not written: disk images are mostly empty).
pub fn clone_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let source = File::open(src)?;
    let target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its argument and touches no memory of ours.
    let cloned = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    if cloned == 0 {
        return Ok(());
    }
    sparse_copy(&source, &target)?;
    target.sync_all()
}

/// Copies the data of `source` into the empty `target`, leaving holes where `source` has
/// holes (found with `SEEK_DATA`/`SEEK_HOLE`) or all-zero blocks.
fn sparse_copy(source: &File, target: &File) -> io::Result<()> {
    const CHUNK: usize = 1024 * 1024;
    let len = source.metadata()?.len();
    target.set_len(len)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let (start, end) = match data_extent(source, offset, len) {
            Some(extent) => extent,
            None => break,
        };
        let mut at = start;
        while at < end {
            let n = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
            let got = source.read_at(&mut buf[..n], at)?;
            if got == 0 {
                return Ok(()); // the file shrank under us
            }
            if buf[..got].iter().any(|b| *b != 0) {
                target.write_all_at(&buf[..got], at)?;
            }
            at += got as u64;
        }
        offset = end;
    }
    Ok(())
}

/// The next data extent `[start, end)` at or after `offset`, or `None` past the last one.
/// Filesystems without hole reporting describe the whole rest of the file as data.
fn data_extent(file: &File, offset: u64, len: u64) -> Option<(u64, u64)> {
    let fd = file.as_raw_fd();
    let off = libc::off_t::try_from(offset).ok()?;
    // SAFETY: lseek on an open descriptor; it only moves the (unused) file offset.
    let start = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if start < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => None,
            _ => Some((offset, len)),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    let start = u64::try_from(start).ok()?;
    let end = u64::try_from(end).map_or(len, |e| e.min(len));
    (start < end).then_some((start, end))
}

/// Creates `dst` as a private copy of `src` unless it exists already (a stopped sandbox
/// keeps its disk), then grows it to at least `min_bytes` (sparse: the guest may grow its
/// filesystem into the space). The copy goes through a temporary file, so an interrupted
/// copy is never taken for a disk.
pub fn ensure_disk_copy(src: &Path, dst: &Path, min_bytes: u64) -> Result<(), VmmError> {
    if !dst.exists() {
        let tmp = tmp_path(dst);
        let _ = std::fs::remove_file(&tmp);
        clone_or_copy(src, &tmp)
            .and_then(|()| std::fs::rename(&tmp, dst))
            .map_err(|source| {
                let _ = std::fs::remove_file(&tmp);
                VmmError::Io {
                    context: format!("copying {} to {}", src.display(), dst.display()),
                    source,
                }
            })?;
    }
    let f = OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(VmmError::io(format!("opening {}", dst.display())))?;
    let len = f
        .metadata()
        .map_err(VmmError::io(format!("inspecting {}", dst.display())))?
        .len();
    if len < min_bytes {
        f.set_len(min_bytes)
            .map_err(VmmError::io(format!("growing {}", dst.display())))?;
    }
    Ok(())
}

/// True when both paths name the same file (inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_keep_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("image.ext4");
        let f = File::create(&src).unwrap();
        f.set_len(64 * 1024 * 1024).unwrap();
        f.write_all_at(b"superblock", 1024).unwrap();
        f.write_all_at(b"inode table", 40 * 1024 * 1024).unwrap();
        f.write_all_at(&[0u8; 4096], 50 * 1024 * 1024).unwrap(); // allocated zeros
        drop(f);
        let dst = dir.path().join("copy.ext4");
        clone_or_copy(&src, &dst).unwrap();
        let a = std::fs::read(&src).unwrap();
        let b = std::fs::read(&dst).unwrap();
        assert!(a == b, "same bytes");
        let md = std::fs::metadata(&dst).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        // At most a few MiB allocated for 64 MiB of mostly holes (a reflink shares blocks).
        assert!(
            md.blocks() * 512 < 8 * 1024 * 1024,
            "{} bytes allocated",
            md.blocks() * 512
        );
        assert!(clone_or_copy(&src, &dst).is_err(), "never overwrites");
    }

    #[test]
    fn disks_are_copied_once_and_grown() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("image.ext4");
        std::fs::write(&src, b"filesystem").unwrap();
        let dst = dir.path().join("rootfs.ext4");
        ensure_disk_copy(&src, &dst, 4096).unwrap();
        let bytes = std::fs::read(&dst).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(&bytes[..10], b"filesystem");
        assert!(!same_file(&src, &dst));
        // An existing disk is kept as it is (the sandbox's writes survive a restart).
        std::fs::write(&dst, b"changed").unwrap();
        ensure_disk_copy(&src, &dst, 0).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"changed");
        assert!(!tmp_path(&dst).exists());
    }
}
