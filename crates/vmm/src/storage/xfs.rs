//! A reflink-capable pool for hosts whose filesystem cannot reflink (ext4, most often):
//! an XFS filesystem with `reflink=1` in a sparse image file, loop-mounted.
//!
//! ```text
//! truncate -s <size> <image>          # sparse: costs what the pool holds, not its size
//! mkfs.xfs -q -m reflink=1 <image>
//! mount -o loop <image> <mount_point>
//! ```
//!
//! [`make_xfs_pool`] does exactly that (as root) and returns an [`XfsPool`];
//! [`XfsPool::unmount`] undoes the mount and detaches the loop device, [`XfsPool::destroy`]
//! also deletes the image. The mount does not survive a reboot by itself: put
//! [`XfsPool::fstab_line`] in `/etc/fstab`, or call [`mount_xfs_pool`] at start-up.
//!
//! Clones in the pool are reflinks of a base that must also be in the pool (a reflink
//! never crosses filesystems): copy the base image in once, clone it many times.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::command::{argv, run_checked, CommandRunner, SystemRunner};
use super::fsutil;
use super::{ReflinkBackend, StorageError};

/// The smallest XFS filesystem `mkfs.xfs` makes (300 MiB).
pub const MIN_XFS_POOL_BYTES: u64 = 300 << 20;

const XFS_HINT: &str = "apt-get install xfsprogs";
const MOUNT_HINT: &str = "apt-get install mount util-linux";

/// A loop-mounted XFS image. Dropping it leaves it mounted (it is meant to outlive the
/// process); call [`Self::unmount`] or [`Self::destroy`] to take it down.
#[derive(Clone)]
pub struct XfsPool {
    pub image: PathBuf,
    pub mount_point: PathBuf,
    /// The loop device it is mounted from, when it could be found.
    pub device: Option<PathBuf>,
    runner: Arc<dyn CommandRunner>,
}

impl std::fmt::Debug for XfsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfsPool")
            .field("image", &self.image)
            .field("mount_point", &self.mount_point)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Makes a `size_bytes` XFS pool (reflink on) in the new sparse file `image` and mounts it
/// at `mount_point` (created if missing). Needs root, `mkfs.xfs` (xfsprogs) and loop
/// devices. Refuses an existing `image` (it would be reformatted). On failure, the image
/// is removed again.
pub fn make_xfs_pool(
    image: &Path,
    size_bytes: u64,
    mount_point: &Path,
) -> Result<XfsPool, StorageError> {
    make_xfs_pool_with(Arc::new(SystemRunner), image, size_bytes, mount_point)
}

/// [`make_xfs_pool`] with its commands run through `runner`.
pub fn make_xfs_pool_with(
    runner: Arc<dyn CommandRunner>,
    image: &Path,
    size_bytes: u64,
    mount_point: &Path,
) -> Result<XfsPool, StorageError> {
    if size_bytes < MIN_XFS_POOL_BYTES {
        return Err(StorageError::PoolTooSmall {
            requested: size_bytes,
            minimum: MIN_XFS_POOL_BYTES,
        });
    }
    let file = fsutil::create_private(image)?;
    let made = file
        .set_len(size_bytes)
        .map_err(StorageError::io(format!("sizing {}", image.display())))
        .and_then(|()| {
            run_checked(
                runner.as_ref(),
                "mkfs.xfs",
                &argv!["-q", "-m", "reflink=1", image],
                XFS_HINT,
            )
        })
        .and_then(|_| mount_loop(runner.clone(), image, mount_point));
    drop(file);
    made.inspect_err(|_| {
        let _ = std::fs::remove_file(image);
    })
}

/// Mounts an existing pool image (made by [`make_xfs_pool`]) at `mount_point`, e.g. after
/// a reboot. Mounting the same image twice is refused by `mount`.
pub fn mount_xfs_pool(image: &Path, mount_point: &Path) -> Result<XfsPool, StorageError> {
    if !image.is_file() {
        return Err(StorageError::NotFound(image.to_path_buf()));
    }
    mount_loop(Arc::new(SystemRunner), image, mount_point)
}

fn mount_loop(
    runner: Arc<dyn CommandRunner>,
    image: &Path,
    mount_point: &Path,
) -> Result<XfsPool, StorageError> {
    std::fs::create_dir_all(mount_point).map_err(StorageError::io(format!(
        "creating {}",
        mount_point.display()
    )))?;
    run_checked(
        runner.as_ref(),
        "mount",
        &argv!["-o", "loop", image, mount_point],
        MOUNT_HINT,
    )?;
    let device = run_checked(
        runner.as_ref(),
        "findmnt",
        &argv!["-n", "-o", "SOURCE", "--mountpoint", mount_point],
        MOUNT_HINT,
    )
    .ok()
    .and_then(|out| {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!s.is_empty()).then(|| PathBuf::from(s))
    });
    Ok(XfsPool {
        image: image.to_path_buf(),
        mount_point: mount_point.to_path_buf(),
        device,
        runner,
    })
}

/// Escapes a path for `/etc/fstab` (spaces, tabs, newlines and backslashes as octal).
fn fstab_escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            ' ' => s.push_str("\\040"),
            '\t' => s.push_str("\\011"),
            '\n' => s.push_str("\\012"),
            '\\' => s.push_str("\\134"),
            c => s.push(c),
        }
    }
    s
}

impl XfsPool {
    /// A reflink backend making its clones in `dir`, a relative path inside the pool
    /// (created if missing; `""` for the pool's root).
    pub fn backend(&self, dir: &Path) -> Result<ReflinkBackend, StorageError> {
        if dir.is_absolute()
            || dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(StorageError::InvalidName {
                what: "pool directory",
                value: dir.display().to_string(),
                reason: "it must be a relative path inside the pool".into(),
            });
        }
        ReflinkBackend::new(self.mount_point.join(dir))
    }

    /// The `/etc/fstab` line that mounts this pool at boot (`nofail`: a missing image does
    /// not stop the boot).
    pub fn fstab_line(&self) -> String {
        format!(
            "{} {} xfs loop,nofail 0 0",
            fstab_escape(&self.image),
            fstab_escape(&self.mount_point)
        )
    }

    /// Unmounts the pool and detaches every loop device still backed by its image.
    /// Unmounting a pool that is not mounted succeeds.
    pub fn unmount(&self) -> Result<(), StorageError> {
        let runner = self.runner.as_ref();
        if let Err(e) = run_checked(runner, "umount", &argv![&self.mount_point], MOUNT_HINT) {
            let not_mounted = matches!(&e, StorageError::Command { stderr, .. }
                if stderr.contains("not mounted") || stderr.contains("no mount point"));
            if !not_mounted {
                return Err(e);
            }
        }
        // `mount -o loop` sets autoclear, so the device is normally gone already; one
        // attached by hand (or by an older mount) is detached here.
        let out = run_checked(
            runner,
            "losetup",
            &argv!["-n", "-O", "NAME", "-j", &self.image],
            MOUNT_HINT,
        )?;
        for dev in String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            run_checked(runner, "losetup", &argv!["-d", dev], MOUNT_HINT)?;
        }
        Ok(())
    }

    /// Unmounts the pool, deletes its image and removes the mount point if empty.
    pub fn destroy(self) -> Result<(), StorageError> {
        self.unmount()?;
        fsutil::remove_file_idempotent(&self.image)?;
        let _ = std::fs::remove_dir(&self.mount_point);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::fake::FakeRunner;
    use super::*;

    #[test]
    fn a_pool_is_a_sparse_image_formatted_and_loop_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("pool.img");
        let mnt = dir.path().join("pool");
        let runner = Arc::new(
            FakeRunner::new()
                .ok("mkfs.xfs", "")
                .ok("mount", "")
                .ok("findmnt", "/dev/loop7\n")
                .ok("umount", "")
                .ok("losetup", "/dev/loop7\n")
                .ok("losetup", ""),
        );
        let pool = make_xfs_pool_with(runner.clone(), &image, 1 << 30, &mnt).unwrap();
        assert_eq!(pool.device.as_deref(), Some(Path::new("/dev/loop7")));
        let md = std::fs::metadata(&image).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert!(std::os::unix::fs::MetadataExt::blocks(&md) == 0, "sparse");
        assert!(mnt.is_dir());
        pool.unmount().unwrap();
        let (i, m) = (image.display(), mnt.display());
        assert_eq!(
            runner.calls(),
            vec![
                format!("mkfs.xfs -q -m reflink=1 {i}"),
                format!("mount -o loop {i} {m}"),
                format!("findmnt -n -o SOURCE --mountpoint {m}"),
                format!("umount {m}"),
                format!("losetup -n -O NAME -j {i}"),
                "losetup -d /dev/loop7".to_string(),
            ]
        );
        assert_eq!(pool.fstab_line(), format!("{i} {m} xfs loop,nofail 0 0"));
    }

    #[test]
    fn a_failed_mount_leaves_no_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("pool.img");
        let runner = Arc::new(FakeRunner::new().ok("mkfs.xfs", "").fail(
            "mount",
            32,
            "mount: /x: failed to setup loop device.",
        ));
        let e = make_xfs_pool_with(runner, &image, 1 << 30, &dir.path().join("m")).unwrap_err();
        assert!(e.to_string().contains("failed to setup loop device"), "{e}");
        assert!(!image.exists());
    }

    #[test]
    fn existing_images_and_tiny_pools_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("pool.img");
        std::fs::write(&image, b"data").unwrap();
        let runner = Arc::new(FakeRunner::new());
        let e = make_xfs_pool_with(runner.clone(), &image, 1 << 30, dir.path()).unwrap_err();
        assert!(matches!(e, StorageError::AlreadyExists(_)), "{e}");
        assert_eq!(std::fs::read(&image).unwrap(), b"data", "never reformatted");
        let e = make_xfs_pool_with(runner.clone(), &dir.path().join("b"), 1 << 20, dir.path())
            .unwrap_err();
        assert!(matches!(e, StorageError::PoolTooSmall { .. }), "{e}");
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn unmounting_twice_is_fine() {
        let runner = Arc::new(
            FakeRunner::new()
                .fail("umount", 32, "umount: /p: not mounted.")
                .ok("losetup", ""),
        );
        let pool = XfsPool {
            image: "/var/lib/my pool.img".into(),
            mount_point: "/p".into(),
            device: None,
            runner: runner.clone(),
        };
        pool.unmount().unwrap();
        assert_eq!(
            pool.fstab_line(),
            "/var/lib/my\\040pool.img /p xfs loop,nofail 0 0"
        );
        let runner = Arc::new(FakeRunner::new().fail("umount", 32, "umount: /p: target is busy."));
        let pool = XfsPool { runner, ..pool };
        assert!(pool.unmount().unwrap_err().to_string().contains("busy"));
    }
}
