//! The destination directory of a snapshot, the same for every driver: refused when it
//! holds a snapshot already, made if missing, and left as it was found when the capture
//! fails.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::driver::{SnapshotInfo, VmmError};

/// The description written next to a snapshot's files, last.
pub const INFO_FILE: &str = "snapshot.json";

/// Runs `capture` into `dest` (passed canonical). On failure, removes what it may have
/// written: the directory when it was made for this snapshot, else the named `files`
/// (and `snapshot.json`).
pub(crate) async fn capture_into<F, Fut>(
    dest: &Path,
    files: &[&str],
    capture: F,
) -> Result<SnapshotInfo, VmmError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<SnapshotInfo, VmmError>>,
{
    if dest.join(INFO_FILE).exists() {
        return Err(VmmError::Snapshot(format!(
            "{} already holds a snapshot",
            dest.display()
        )));
    }
    let created_dir = !dest.exists();
    std::fs::create_dir_all(dest).map_err(VmmError::io(format!("creating {}", dest.display())))?;
    let dest = std::fs::canonicalize(dest)
        .map_err(VmmError::io(format!("resolving {}", dest.display())))?;
    match capture(dest.clone()).await {
        Ok(info) => Ok(info),
        Err(e) => {
            if created_dir {
                let _ = std::fs::remove_dir_all(&dest);
            } else {
                for f in files.iter().chain(&[INFO_FILE]) {
                    let p = dest.join(f);
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            Err(e)
        }
    }
}

/// Writes `info` as `snapshot.json` in its directory.
pub(crate) fn write_info(info: &SnapshotInfo) -> Result<(), VmmError> {
    let json = serde_json::to_vec_pretty(info).map_err(|e| VmmError::Corrupt(e.to_string()))?;
    std::fs::write(info.dir.join(INFO_FILE), json)
        .map_err(VmmError::io(format!("writing {INFO_FILE}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_capture_leaves_the_directory_as_it_was() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fresh = tmp.path().join("fresh");
        let err = capture_into(&fresh, &["memory.bin"], |d| async move {
            std::fs::write(d.join("memory.bin"), b"x").expect("write");
            Err(VmmError::Snapshot("boom".into()))
        })
        .await;
        assert!(err.is_err());
        assert!(!fresh.exists(), "a directory made for it goes");

        let kept = tmp.path().join("kept");
        std::fs::create_dir(&kept).expect("mkdir");
        std::fs::write(kept.join("mine.txt"), b"y").expect("write");
        let err = capture_into(&kept, &["memory.bin"], |d| async move {
            std::fs::write(d.join("memory.bin"), b"x").expect("write");
            Err(VmmError::Snapshot("boom".into()))
        })
        .await;
        assert!(err.is_err());
        assert!(kept.join("mine.txt").exists(), "what was there stays");
        assert!(!kept.join("memory.bin").exists(), "what it wrote goes");

        std::fs::write(kept.join(INFO_FILE), b"{}").expect("write");
        let refused = capture_into(&kept, &[], |_| async { unreachable!() }).await;
        assert!(matches!(refused, Err(VmmError::Snapshot(_))));
    }
}
