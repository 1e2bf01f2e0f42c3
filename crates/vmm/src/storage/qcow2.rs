//! qcow2 overlays: `qemu-img create -f qcow2 -F raw -b <base> <dest>`. The overlay holds
//! only what the guest writes; reads of everything else go to the base, which must stay
//! (the handle's `backing`). Only QEMU can open these.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::command::{argv, run_checked, CommandRunner, SystemRunner};
use super::fsutil;
use super::{
    check_kind, DiskFormat, DiskHandle, DiskUsage, PoolUsage, StorageBackend, StorageError,
    StorageKind,
};

pub(crate) const QEMU_IMG_HINT: &str = "apt-get install qemu-utils";

/// Makes qcow2 overlays in `pool_dir` with `qemu-img`.
#[derive(Clone)]
pub struct Qcow2Backend {
    pool_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
}

impl std::fmt::Debug for Qcow2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Backend")
            .field("pool_dir", &self.pool_dir)
            .finish_non_exhaustive()
    }
}

impl Qcow2Backend {
    /// A backend running `qemu-img` on this host.
    pub fn new(pool_dir: impl Into<PathBuf>) -> Self {
        Self::with_runner(pool_dir, Arc::new(SystemRunner))
    }

    pub fn with_runner(pool_dir: impl Into<PathBuf>, runner: Arc<dyn CommandRunner>) -> Self {
        Self {
            pool_dir: pool_dir.into(),
            runner,
        }
    }

    /// `qemu-img --version`'s first line, or why it cannot run.
    pub fn version(runner: &dyn CommandRunner) -> Result<String, StorageError> {
        let out = run_checked(runner, "qemu-img", &argv!["--version"], QEMU_IMG_HINT)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("qemu-img")
            .trim()
            .to_owned())
    }

    /// The argv of `qemu-img create` for an overlay of `base` at `dest`.
    fn create_args(base: &Path, dest: &Path, size: Option<u64>) -> Vec<OsString> {
        let mut args = argv!["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, dest].to_vec();
        if let Some(size) = size {
            args.push(size.to_string().into());
        }
        args
    }
}

impl StorageBackend for Qcow2Backend {
    fn kind(&self) -> StorageKind {
        StorageKind::Qcow2
    }

    fn clone_disk(
        &self,
        base: &Path,
        dest: &Path,
        size_bytes: Option<u64>,
    ) -> Result<DiskHandle, StorageError> {
        let base_len = fsutil::check_clone_paths(base, dest)?;
        fsutil::clone_size(base_len, size_bytes)?;
        // qemu-img records the backing path as given and resolves a relative one against
        // the overlay's directory: record an absolute one.
        let base = base
            .canonicalize()
            .map_err(|e| StorageError::from_io(format!("resolving {}", base.display()), base, e))?;
        let tmp = fsutil::tmp_sibling(dest)?;
        let made = (|| {
            run_checked(
                self.runner.as_ref(),
                "qemu-img",
                &Self::create_args(&base, &tmp, size_bytes),
                QEMU_IMG_HINT,
            )?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(StorageError::io(format!("restricting {}", dest.display())))
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fsutil::publish(&tmp, dest)?;
        Ok(DiskHandle {
            kind: StorageKind::Qcow2,
            path: dest.to_path_buf(),
            format: DiskFormat::Qcow2,
            backing: Some(base),
        })
    }

    fn remove(&self, disk: &DiskHandle) -> Result<(), StorageError> {
        check_kind(StorageKind::Qcow2, disk)?;
        fsutil::remove_file_idempotent(&disk.path)
    }

    /// The overlay file's allocated size (qemu-img's "actual-size"): the guest's writes
    /// plus qcow2 metadata (a fresh overlay is a few hundred KiB). Read from the file
    /// system, so it works while QEMU holds the image open.
    fn disk_usage(&self, disk: &DiskHandle) -> Result<DiskUsage, StorageError> {
        check_kind(StorageKind::Qcow2, disk)?;
        fsutil::own_usage(&disk.path)
    }

    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        fsutil::fs_usage(&self.pool_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::fake::FakeRunner;
    use super::*;

    #[test]
    fn overlays_are_made_with_the_exact_qemu_img_command() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::write(&base, [0u8; 4096]).unwrap();
        let dest = dir.path().join("disk.qcow2");
        // The fake does not create the file, so publishing fails after the command ran:
        // that failure is what the real qemu-img would have prevented.
        let runner = Arc::new(FakeRunner::new().ok("qemu-img", ""));
        let backend = Qcow2Backend::with_runner(dir.path(), runner.clone());
        let e = backend.clone_disk(&base, &dest, Some(1 << 30)).unwrap_err();
        let calls = runner.calls();
        assert_eq!(calls.len(), 1);
        let base_abs = base.canonicalize().unwrap();
        let expected_prefix = format!(
            "qemu-img create -q -f qcow2 -F raw -b {} {}/.disk.qcow2.",
            base_abs.display(),
            dir.path().display()
        );
        assert!(calls[0].starts_with(&expected_prefix), "{}", calls[0]);
        assert!(calls[0].ends_with(".tmp 1073741824"), "{}", calls[0]);
        assert!(!matches!(e, StorageError::Command { .. }), "{e}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_failed_qemu_img_is_reported_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::write(&base, [0u8; 4096]).unwrap();
        let runner = Arc::new(FakeRunner::new().fail(
            "qemu-img",
            1,
            "qemu-img: disk.qcow2: Could not open backing file",
        ));
        let backend = Qcow2Backend::with_runner(dir.path(), runner);
        let e = backend
            .clone_disk(&base, &dir.path().join("disk.qcow2"), None)
            .unwrap_err();
        assert!(e.to_string().contains("Could not open backing file"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the base"
        );
    }

    #[test]
    fn a_smaller_disk_than_the_base_is_refused_before_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::write(&base, [0u8; 8192]).unwrap();
        let runner = Arc::new(FakeRunner::new());
        let backend = Qcow2Backend::with_runner(dir.path(), runner.clone());
        let e = backend
            .clone_disk(&base, &dir.path().join("d.qcow2"), Some(4096))
            .unwrap_err();
        assert!(matches!(e, StorageError::InvalidSize { .. }), "{e}");
        assert!(runner.calls().is_empty());
    }
}
