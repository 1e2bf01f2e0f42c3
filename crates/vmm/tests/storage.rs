//! The storage backends on this host's real filesystems and tools: each clones a base with
//! known content, writes to the clone, and checks that the base is untouched, the clone
//! sees its write, the usage figures move as they should, and removal leaves nothing.
//!
//! - copy: always runs.
//! - qcow2: needs `qemu-img` and `qemu-io` (qemu-utils); prints `skipped: …` otherwise.
//! - reflink: makes its own small XFS pool (`mkfs.xfs -m reflink=1` on a loop device) in a
//!   temporary directory, and always unmounts it; needs root, xfsprogs and loop devices,
//!   prints `skipped: …` otherwise.
//! - lvm-thin: only where device-mapper works (`dmsetup version`), on a loop-backed volume
//!   group of its own; prints `skipped: …` otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use atelier_vmm::storage::{
    detect, make_xfs_pool, CopyBackend, DetectOptions, DiskFormat, DiskHandle, LvmConfig,
    LvmThinBackend, Qcow2Backend, ReflinkBackend, StorageBackend, StorageKind, XfsPool,
};

const MIB: u64 = 1 << 20;

/// Deterministic, incompressible-looking bytes (xorshift), different per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A base image: `data_mib` MiB of pattern at the start, then a hole, then a marker at the
/// end (`total_mib` MiB in all), flushed to disk.
fn make_base(path: &Path, data_mib: u64, total_mib: u64) -> Vec<u8> {
    let f = File::create(path).unwrap();
    f.set_len(total_mib * MIB).unwrap();
    let data = pattern((data_mib * MIB) as usize, 1);
    f.write_all_at(&data, 0).unwrap();
    f.write_all_at(b"END-OF-BASE", total_mib * MIB - 11)
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::read(path).unwrap()
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Unmounts and deletes the pool however the test ends.
struct PoolGuard(Option<XfsPool>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let mount_point = pool.mount_point.clone();
            if let Err(e) = pool.destroy() {
                eprintln!(
                    "could not clean up the pool at {}: {e}",
                    mount_point.display()
                );
            }
        }
    }
}

/// A fresh 512 MiB XFS pool with reflink in `dir`, or why there cannot be one here.
fn xfs_pool(dir: &Path) -> Result<PoolGuard, String> {
    if !is_root() {
        return Err("not root (mounting a loop device needs it)".into());
    }
    if !have("mkfs.xfs", "-V") {
        return Err("mkfs.xfs not found (apt-get install xfsprogs)".into());
    }
    make_xfs_pool(&dir.join("pool.img"), 512 * MIB, &dir.join("pool"))
        .map(|p| PoolGuard(Some(p)))
        .map_err(|e| format!("could not make an XFS pool: {e}"))
}

/// The clone's content equals the base with `write` applied, and the base is unchanged.
fn check_contents(base_path: &Path, base: &[u8], clone: &[u8], write: (u64, &[u8])) {
    assert!(
        std::fs::read(base_path).unwrap() == base,
        "the base is unchanged"
    );
    let (at, bytes) = write;
    let at = at as usize;
    assert_eq!(clone.len(), base.len());
    assert!(
        clone[..at] == base[..at],
        "the clone keeps the base before its write"
    );
    assert!(
        &clone[at..at + bytes.len()] == bytes,
        "the clone sees its write"
    );
    assert!(
        clone[at + bytes.len()..] == base[at + bytes.len()..],
        "the clone keeps the base after its write"
    );
}

#[test]
fn copy_clones_are_full_private_copies() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.ext4");
    let base = make_base(&base_path, 8, 32);
    let backend = CopyBackend::new(dir.path());
    assert_eq!(backend.kind(), StorageKind::Copy);

    let dest = dir.path().join("disk.raw");
    let disk = backend.clone_disk(&base_path, &dest, None).unwrap();
    assert_eq!(disk.format, DiskFormat::Raw);
    assert_eq!(disk.backing, None);
    let fresh = backend.disk_usage(&disk).unwrap();
    assert!(fresh.exact);
    assert!(
        (8 * MIB..=9 * MIB).contains(&fresh.own_bytes),
        "a copy owns all of the base's data (8 MiB + a block), holes excluded: {fresh:?}"
    );

    let write = pattern(2 * MIB as usize, 7);
    write_at(&dest, 20 * MIB, &write); // into the hole: new blocks
    check_contents(
        &base_path,
        &base,
        &std::fs::read(&dest).unwrap(),
        (20 * MIB, &write),
    );
    let written = backend.disk_usage(&disk).unwrap();
    assert!(
        written.own_bytes >= fresh.own_bytes + 2 * MIB
            && written.own_bytes <= fresh.own_bytes + 3 * MIB,
        "{fresh:?} → {written:?}"
    );
    let pool = backend.pool_usage().unwrap();
    assert!(pool.total_bytes > 0 && pool.used_bytes <= pool.total_bytes);

    // A second clone with a larger size; the destination is never overwritten.
    let big = backend
        .clone_disk(&base_path, &dir.path().join("big.raw"), Some(64 * MIB))
        .unwrap();
    assert_eq!(std::fs::metadata(&big.path).unwrap().len(), 64 * MIB);
    assert!(backend.clone_disk(&base_path, &dest, None).is_err());
    assert!(std::fs::read(&dest).unwrap()[20 * MIB as usize..][..write.len()] == write[..]);

    backend.remove(&disk).unwrap();
    backend.remove(&big).unwrap();
    backend.remove(&disk).unwrap(); // already gone: fine
    assert_eq!(
        entries(dir.path()),
        vec!["base.ext4"],
        "nothing left behind"
    );
}

#[test]
fn qcow2_overlays_read_the_base_and_keep_their_writes() {
    atelier_testkit::require!(atelier_testkit::missing(&[
        ("qemu-img", "qemu-utils"),
        ("qemu-io", "qemu-utils")
    ]));
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.ext4");
    let base = make_base(&base_path, 8, 32);
    let backend = Qcow2Backend::new(dir.path());
    let dest = dir.path().join("disk.qcow2");
    let disk = backend.clone_disk(&base_path, &dest, None).unwrap();
    assert_eq!(disk.format, DiskFormat::Qcow2);
    assert_eq!(disk.backing, Some(base_path.canonicalize().unwrap()));
    let fresh = backend.disk_usage(&disk).unwrap();
    assert!(
        fresh.own_bytes < MIB,
        "a fresh overlay is metadata only: {fresh:?}"
    );

    // The guest's view, written and read through QEMU's block layer.
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 3145728 4194304"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flat = dir.path().join("flat.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&dest)
        .arg(&flat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let write = vec![0xab; 4 * MIB as usize];
    check_contents(
        &base_path,
        &base,
        &std::fs::read(&flat).unwrap(),
        (3 * MIB, &write),
    );
    std::fs::remove_file(&flat).unwrap();

    let written = backend.disk_usage(&disk).unwrap();
    assert!(
        written.own_bytes >= fresh.own_bytes + 4 * MIB
            && written.own_bytes <= fresh.own_bytes + 5 * MIB,
        "the overlay grows by what was written: {fresh:?} → {written:?}"
    );

    let grown = backend
        .clone_disk(&base_path, &dir.path().join("grown.qcow2"), Some(1 << 30))
        .unwrap();
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&grown.path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30);

    backend.remove(&disk).unwrap();
    backend.remove(&grown).unwrap();
    assert_eq!(
        entries(dir.path()),
        vec!["base.ext4"],
        "nothing left behind"
    );
}

#[test]
fn reflink_clones_share_blocks_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let pool = match xfs_pool(dir.path()) {
        Ok(p) => p,
        Err(why) => {
            atelier_testkit::skip(why);
            return;
        }
    };
    let mnt = pool.0.as_ref().map(|p| p.mount_point.clone()).unwrap();
    let detected = detect(&mnt, &DetectOptions::default());
    assert_eq!(detected.kind(), StorageKind::Reflink, "{}", detected.reason);
    assert!(detected.reason.contains("is on xfs"), "{}", detected.reason);

    let backend = ReflinkBackend::new(&mnt).unwrap();
    let base_path = mnt.join("base.ext4");
    let base = make_base(&base_path, 32, 64);
    let before = backend.pool_usage().unwrap();

    let disks: Vec<DiskHandle> = (0..5)
        .map(|i| {
            backend
                .clone_disk(&base_path, &mnt.join(format!("disk{i}.raw")), None)
                .unwrap()
        })
        .collect();
    let after = backend.pool_usage().unwrap();
    assert!(
        after.used_bytes.saturating_sub(before.used_bytes) < 2 * MIB,
        "5 clones of a 32 MiB base cost metadata only: {before:?} → {after:?}"
    );
    let disk = &disks[0];
    let fresh = backend.disk_usage(disk).unwrap();
    assert!(fresh.exact);
    assert!(
        fresh.own_bytes < 64 * 1024,
        "a fresh clone owns ~nothing: {fresh:?}"
    );
    assert!(std::fs::read(&disk.path).unwrap() == base);

    // Overwrite 4 MiB inside the shared data: copy-on-write gives the clone its own blocks.
    let write = pattern(4 * MIB as usize, 9);
    write_at(&disk.path, 10 * MIB, &write);
    check_contents(
        &base_path,
        &base,
        &std::fs::read(&disk.path).unwrap(),
        (10 * MIB, &write),
    );
    let written = backend.disk_usage(disk).unwrap();
    assert!(
        (4 * MIB..=4 * MIB + 256 * 1024).contains(&written.own_bytes),
        "the clone owns what it wrote: {fresh:?} → {written:?}"
    );
    // The other clones still see the base.
    assert!(std::fs::read(&disks[1].path).unwrap() == base);
    assert!(backend.disk_usage(&disks[1]).unwrap().own_bytes < 64 * 1024);

    // Growing a clone is sparse.
    let grown = backend
        .clone_disk(&base_path, &mnt.join("grown.raw"), Some(256 * MIB))
        .unwrap();
    assert_eq!(std::fs::metadata(&grown.path).unwrap().len(), 256 * MIB);
    assert!(backend.disk_usage(&grown).unwrap().own_bytes < 64 * 1024);

    // A base outside the pool cannot be reflinked into it.
    let outside = dir.path().join("outside.ext4");
    make_base(&outside, 1, 4);
    let e = backend
        .clone_disk(&outside, &mnt.join("x.raw"), None)
        .unwrap_err();
    assert!(e.to_string().contains("different filesystems"), "{e}");

    for d in disks.iter().chain([&grown]) {
        backend.remove(d).unwrap();
    }
    assert_eq!(entries(&mnt), vec!["base.ext4"], "nothing left behind");
    drop(pool);
    assert!(
        !mnt.exists(),
        "the pool is unmounted and its mount point gone"
    );
    assert!(!dir.path().join("pool.img").exists());
}

/// A volume group on a loop device with a thin pool, removed however the test ends.
struct LvmGuard {
    vg: String,
    loop_dev: Option<String>,
}

impl Drop for LvmGuard {
    fn drop(&mut self) {
        let _ = Command::new("vgremove").args(["-f", &self.vg]).output();
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("pvremove").args(["-ff", "-y", dev]).output();
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn lvm_thin_snapshots_where_device_mapper_works() {
    // LVM thin needs device-mapper, which not every host (nor every VM) has.
    if !is_root() {
        atelier_testkit::skip_documented("LVM thin pools need root");
        return;
    }
    if let Err(e) = run("dmsetup", &["version"]) {
        atelier_testkit::skip_documented(format!("device-mapper is not available ({e})"));
        return;
    }
    if !have("lvs", "--version") {
        atelier_testkit::skip_documented("LVM is not installed (apt-get install lvm2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pv.img");
    File::create(&img).unwrap().set_len(1 << 30).unwrap();
    let vg = format!("atelier_test_{}", std::process::id());
    let mut guard = LvmGuard {
        vg: vg.clone(),
        loop_dev: None,
    };
    let setup = (|| -> Result<(), String> {
        let dev = run("losetup", &["--find", "--show", &img.to_string_lossy()])?;
        guard.loop_dev = Some(dev.clone());
        run("pvcreate", &["-y", &dev])?;
        run("vgcreate", &[&vg, &dev])?;
        run(
            "lvcreate",
            &["-y", "-L", "512m", "-T", &format!("{vg}/pool")],
        )?;
        run(
            "lvcreate",
            &["-y", "-V", "64m", "-T", &format!("{vg}/pool"), "-n", "base"],
        )?;
        Ok(())
    })();
    if let Err(e) = setup {
        atelier_testkit::skip_documented(format!(
            "could not set up a thin pool on a loop device ({e})"
        ));
        return;
    }
    let base_dev = PathBuf::from(format!("/dev/{vg}/base"));
    let base = pattern(16 * MIB as usize, 3);
    write_at(&base_dev, 0, &base);

    let backend = LvmThinBackend::new(LvmConfig {
        vg: vg.clone(),
        thin_pool: "pool".into(),
    })
    .unwrap();
    let detected = detect(
        dir.path(),
        &DetectOptions {
            accept_qcow2: true,
            lvm: Some(backend.config().clone()),
        },
    );
    assert_eq!(detected.kind(), StorageKind::LvmThin, "{}", detected.reason);

    let disk = backend
        .clone_disk(&base_dev, Path::new("sb-1"), Some(128 * MIB))
        .unwrap();
    assert_eq!(disk.path, PathBuf::from(format!("/dev/{vg}/sb-1")));
    let write = pattern(MIB as usize, 5);
    write_at(&disk.path, 4 * MIB, &write);
    let mut read = vec![0u8; base.len()];
    File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut read, 0)
        .unwrap();
    let mut expected = base.clone();
    expected[4 * MIB as usize..5 * MIB as usize].copy_from_slice(&write);
    assert!(read == expected, "the snapshot sees the base and its write");
    let mut base_read = vec![0u8; base.len()];
    File::open(&base_dev)
        .unwrap()
        .read_exact_at(&mut base_read, 0)
        .unwrap();
    assert!(base_read == base, "the base is unchanged");
    let usage = backend.disk_usage(&disk).unwrap();
    assert!(!usage.exact && usage.own_bytes >= MIB, "{usage:?}");
    let pool = backend.pool_usage().unwrap();
    assert!(
        pool.used_bytes > 0 && pool.total_bytes >= 512 * MIB,
        "{pool:?}"
    );

    backend.remove(&disk).unwrap();
    backend.remove(&disk).unwrap();
    assert!(
        run("lvs", &[&format!("{vg}/sb-1")]).is_err(),
        "the snapshot is gone"
    );
    drop(guard);
}
