//! Picking a storage backend for a pool directory, with the reason `atelier system` shows.

use std::path::Path;
use std::sync::Arc;

use super::command::{CommandRunner, SystemRunner};
use super::fsutil::filesystem_name;
use super::{
    probe_reflink, CopyBackend, LvmConfig, LvmThinBackend, Qcow2Backend, ReflinkBackend,
    StorageBackend, StorageError, StorageKind,
};

/// What the consumer of the disks can take, and what the operator configured.
#[derive(Debug, Clone, Default)]
pub struct DetectOptions {
    /// The VMM can open qcow2 (QEMU can; Firecracker cannot).
    pub accept_qcow2: bool,
    /// Use this LVM thin pool when it works (LVM is never guessed: it is only tried when
    /// configured).
    pub lvm: Option<LvmConfig>,
}

/// The chosen backend and why.
pub struct Detected {
    pub backend: Box<dyn StorageBackend>,
    /// One line for `atelier system`: what was chosen and why the better ones were not.
    pub reason: String,
}

impl Detected {
    pub fn kind(&self) -> StorageKind {
        self.backend.kind()
    }
}

impl std::fmt::Debug for Detected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detected")
            .field("kind", &self.kind())
            .field("reason", &self.reason)
            .finish()
    }
}

/// Picks the best backend for clones in `pool_dir` (created if missing), in this order:
///
/// 1. `lvm-thin`, when `opts.lvm` names a volume group and thin pool and `lvs` finds it;
/// 2. `reflink`, when a `FICLONE` of a probe file in `pool_dir` works (XFS `reflink=1`,
///    btrfs);
/// 3. `qcow2`, when `opts.accept_qcow2` and `qemu-img` runs;
/// 4. `copy`, always.
///
/// Never fails: whatever cannot be used is explained in [`Detected::reason`].
pub fn detect(pool_dir: &Path, opts: &DetectOptions) -> Detected {
    detect_with(pool_dir, opts, Arc::new(SystemRunner))
}

/// [`detect`] with the commands (`lvs`, `qemu-img`) run through `runner`.
pub fn detect_with(
    pool_dir: &Path,
    opts: &DetectOptions,
    runner: Arc<dyn CommandRunner>,
) -> Detected {
    detect_inner(pool_dir, opts, runner, &probe_reflink)
}

fn fs_of(dir: &Path) -> String {
    filesystem_name(dir).unwrap_or_else(|_| "an unknown filesystem".into())
}

fn detect_inner(
    pool_dir: &Path,
    opts: &DetectOptions,
    runner: Arc<dyn CommandRunner>,
    reflink_probe: &dyn Fn(&Path) -> Result<(), StorageError>,
) -> Detected {
    let mut not_chosen: Vec<String> = Vec::new();
    let finish = |backend: Box<dyn StorageBackend>, why: String, not_chosen: Vec<String>| {
        let mut reason = format!("{}: {why}", backend.kind());
        for n in not_chosen {
            reason.push_str("; ");
            reason.push_str(&n);
        }
        Detected { backend, reason }
    };

    if let Some(cfg) = &opts.lvm {
        let probed = LvmThinBackend::with_runner(cfg.clone(), runner.clone())
            .and_then(|b| b.probe().map(|desc| (b, desc)));
        match probed {
            Ok((b, desc)) => return finish(Box::new(b), format!("configured {desc}"), not_chosen),
            Err(e) => not_chosen.push(format!(
                "the configured LVM thin pool {}/{} is not usable ({e})",
                cfg.vg, cfg.thin_pool
            )),
        }
    }

    match reflink_probe(pool_dir) {
        Ok(()) => {
            return finish(
                Box::new(ReflinkBackend::from_probed(pool_dir)),
                format!(
                    "{} is on {}, which clones with FICLONE (O(1) copy-on-write)",
                    pool_dir.display(),
                    fs_of(pool_dir)
                ),
                not_chosen,
            )
        }
        Err(StorageError::Unsupported { .. }) => not_chosen.push(format!(
            "no reflink: {} is on {}, which cannot clone files (an XFS pool made with \
             mkfs.xfs -m reflink=1, or btrfs, would make clones instant)",
            pool_dir.display(),
            fs_of(pool_dir)
        )),
        Err(e) => not_chosen.push(format!("no reflink: {e}")),
    }

    if opts.accept_qcow2 {
        match Qcow2Backend::version(runner.as_ref()) {
            Ok(version) => {
                return finish(
                    Box::new(Qcow2Backend::with_runner(pool_dir, runner.clone())),
                    format!("overlays backed by the base image ({version})"),
                    not_chosen,
                )
            }
            Err(e) => not_chosen.push(format!("no qcow2: {e}")),
        }
    } else {
        not_chosen.push("no qcow2: the driver opens raw disks only".into());
    }

    finish(
        Box::new(CopyBackend::new(pool_dir)),
        "every clone is a full copy of its base".into(),
        not_chosen,
    )
}

#[cfg(test)]
mod tests {
    use super::super::command::fake::{Answer, FakeRunner};
    use super::*;

    const LVS_POOL: &str = r#"{"report":[{"lv":[{"lv_name":"pool","lv_attr":"twi-aotz--","lv_size":"1073741824","data_percent":"3.00"}]}]}"#;

    fn reflink_ok(_: &Path) -> Result<(), StorageError> {
        Ok(())
    }

    fn reflink_no(_: &Path) -> Result<(), StorageError> {
        Err(StorageError::Unsupported {
            kind: StorageKind::Reflink,
            reason: "ext4 cannot reflink".into(),
        })
    }

    fn lvm() -> Option<LvmConfig> {
        Some(LvmConfig {
            vg: "vg0".into(),
            thin_pool: "pool".into(),
        })
    }

    fn run(
        opts: DetectOptions,
        runner: FakeRunner,
        probe: &dyn Fn(&Path) -> Result<(), StorageError>,
    ) -> (Detected, Vec<String>) {
        let runner = Arc::new(runner);
        let d = detect_inner(Path::new("/pool"), &opts, runner.clone(), probe);
        assert_eq!(runner.unanswered(), 0, "every scripted command ran");
        (d, runner.calls())
    }

    #[test]
    fn a_working_configured_thin_pool_wins() {
        let (d, calls) = run(
            DetectOptions {
                accept_qcow2: true,
                lvm: lvm(),
            },
            FakeRunner::new().ok("lvs", LVS_POOL),
            &reflink_ok,
        );
        assert_eq!(d.kind(), StorageKind::LvmThin);
        assert_eq!(
            d.reason,
            "lvm-thin: configured thin pool vg0/pool: 3.0% of 1073741824 bytes used"
        );
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn a_broken_thin_pool_falls_back_and_says_why() {
        let (d, _) = run(
            DetectOptions {
                accept_qcow2: false,
                lvm: lvm(),
            },
            FakeRunner::new().fail(
                "lvs",
                5,
                "  /dev/mapper/control: open failed: No such device",
            ),
            &reflink_ok,
        );
        assert_eq!(d.kind(), StorageKind::Reflink);
        assert!(
            d.reason.starts_with("reflink: /pool is on "),
            "{}",
            d.reason
        );
        assert!(
            d.reason
                .contains("the configured LVM thin pool vg0/pool is not usable (`lvs"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("No such device"), "{}", d.reason);
    }

    #[test]
    fn lvm_is_not_tried_unless_configured() {
        let (d, calls) = run(DetectOptions::default(), FakeRunner::new(), &reflink_ok);
        assert_eq!(d.kind(), StorageKind::Reflink);
        assert!(calls.is_empty(), "{calls:?}");
    }

    #[test]
    fn without_reflink_qcow2_is_chosen_when_accepted_and_installed() {
        let (d, calls) = run(
            DetectOptions {
                accept_qcow2: true,
                lvm: None,
            },
            FakeRunner::new().ok(
                "qemu-img",
                "qemu-img version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u16)\nCopyright\n",
            ),
            &reflink_no,
        );
        assert_eq!(d.kind(), StorageKind::Qcow2);
        assert!(
            d.reason.starts_with(
                "qcow2: overlays backed by the base image (qemu-img version 7.2.15 (Debian"
            ),
            "{}",
            d.reason
        );
        assert!(
            d.reason.contains("; no reflink: /pool is on"),
            "{}",
            d.reason
        );
        assert_eq!(calls, vec!["qemu-img --version"]);
    }

    #[test]
    fn copy_is_the_last_resort_with_every_reason() {
        let (d, _) = run(
            DetectOptions {
                accept_qcow2: true,
                lvm: None,
            },
            FakeRunner::new().expect("qemu-img", Answer::NotInstalled),
            &reflink_no,
        );
        assert_eq!(d.kind(), StorageKind::Copy);
        assert!(
            d.reason
                .starts_with("copy: every clone is a full copy of its base; no reflink:"),
            "{}",
            d.reason
        );
        assert!(
            d.reason
                .ends_with("; no qcow2: qemu-img is not installed (apt-get install qemu-utils)"),
            "{}",
            d.reason
        );

        let (d, calls) = run(DetectOptions::default(), FakeRunner::new(), &reflink_no);
        assert_eq!(d.kind(), StorageKind::Copy);
        assert!(
            d.reason
                .ends_with("; no qcow2: the driver opens raw disks only"),
            "{}",
            d.reason
        );
        assert!(
            calls.is_empty(),
            "qemu-img is not asked when qcow2 is not wanted"
        );
    }

    #[test]
    fn detection_on_a_real_directory_agrees_with_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(FakeRunner::new().fail("qemu-img", 127, "nope"));
        let d = detect_with(
            dir.path(),
            &DetectOptions {
                accept_qcow2: true,
                lvm: None,
            },
            runner,
        );
        match probe_reflink(dir.path()) {
            Ok(()) => assert_eq!(d.kind(), StorageKind::Reflink, "{}", d.reason),
            Err(_) => assert_eq!(d.kind(), StorageKind::Copy, "{}", d.reason),
        }
    }
}
