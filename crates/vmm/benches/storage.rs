//! Clone cost of the storage backends: wall time of `clone_disk` (p50/p90/max over N
//! clones of one base) and the disk those N clones use, for a 1 GiB and a 10 GiB base.
//!
//! ```sh
//! cargo bench -p atelier-vmm --bench storage            # N = 20
//! ATELIER_BENCH_CLONES=50 ATELIER_BENCH_DIR=/var/tmp cargo bench -p atelier-vmm --bench storage
//! ```
//!
//! - reflink: a 16 GiB sparse XFS pool (`reflink=1`) loop-mounted in the bench directory
//!   (needs root and xfsprogs; skipped with the reason otherwise). The 1 GiB base is
//!   written with data, the 10 GiB base is `fallocate`d: both have real extents; a third
//!   base has one 4 KiB extent every 64 KiB (16384 extents), the worst case, since a
//!   reflink's cost follows the extent count. `ATELIER_BENCH_IMAGE=<rootfs.ext4>` adds a
//!   row for a real image (copied into the pool once).
//! - qcow2: overlays on the bench directory's filesystem; the 1 GiB base is written with
//!   data, the 10 GiB one is sparse (an overlay never reads its base at creation).
//! - copy: the baseline, 1 GiB only (a full copy of 10 GiB, N times, is not cheap enough
//!   to run as a benchmark), on the bench directory's filesystem.
//!
//! "pool growth" is the pool filesystem's used bytes after the N clones minus before
//! (on a shared host filesystem other writers add noise; the XFS pool is the bench's
//! own); "own" is the sum of `disk_usage` over the clones. Everything is removed after.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier_vmm::storage::{
    extent_summary, filesystem_name, make_xfs_pool, CopyBackend, DiskHandle, Qcow2Backend,
    ReflinkBackend, StorageBackend, StorageError, XfsPool,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

type BenchResult<T> = Result<T, String>;

fn err(context: &str) -> impl FnOnce(StorageError) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Unmounts and deletes the pool however the benchmark ends.
struct PoolGuard(Option<XfsPool>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            if let Err(e) = pool.destroy() {
                eprintln!("could not clean up the XFS pool: {e}");
            }
        }
    }
}

/// Removes the disks however the row ends.
struct Disks<'a> {
    backend: &'a dyn StorageBackend,
    disks: Vec<DiskHandle>,
}

impl Drop for Disks<'_> {
    fn drop(&mut self) {
        for d in &self.disks {
            if let Err(e) = self.backend.remove(d) {
                eprintln!("could not remove {}: {e}", d.path.display());
            }
        }
    }
}

/// Writes `len` bytes of non-zero data (so nothing is a hole), 8 MiB at a time.
fn write_base(path: &Path, len: u64) -> BenchResult<()> {
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut chunk = vec![0u8; (8 * MIB) as usize];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut at = 0;
    while at < len {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = (len - at).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], at)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        at += n as u64;
    }
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", path.display()))
}

/// A `len` sparse file with 4 KiB of data every `stride` bytes: one extent per block, the
/// worst case for a reflink (its cost follows the extent count).
fn fragmented_base(path: &Path, len: u64, stride: u64) -> BenchResult<()> {
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.set_len(len).map_err(|e| e.to_string())?;
    let block = [0xa5u8; 4096];
    let mut at = 0;
    while at < len {
        f.write_all_at(&block, at)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        at += stride;
    }
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", path.display()))
}

fn fallocate_base(path: &Path, len: u64) -> BenchResult<()> {
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let len_off = libc::off_t::try_from(len).map_err(|e| e.to_string())?;
    // SAFETY: fallocate on an open descriptor; no memory of ours is involved.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len_off) } != 0 {
        return Err(format!(
            "fallocate {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", path.display()))
}

fn sparse_base(path: &Path, len: u64) -> BenchResult<()> {
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.set_len(len).map_err(|e| e.to_string())?;
    f.write_all_at(b"superblock", 1024)
        .map_err(|e| e.to_string())
}

struct Row {
    backend: String,
    base: String,
    extents: String,
    clones: usize,
    p50: Duration,
    p90: Duration,
    max: Duration,
    pool_growth: i128,
    own: u64,
    own_exact: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Makes `n` clones of `base` in `dir`, timing each, then measures and removes them.
fn bench_clones(
    backend: &dyn StorageBackend,
    base: &Path,
    base_label: &str,
    dir: &Path,
    n: usize,
) -> BenchResult<Row> {
    let extents = match extent_summary(base) {
        Ok(s) => s.extents.to_string(),
        Err(_) => "?".into(),
    };
    // SAFETY: sync has no preconditions; it lets earlier removals settle (XFS frees
    // unlinked files' blocks in the background) before the pool is measured.
    unsafe { libc::sync() };
    let before = backend.pool_usage().map_err(err("pool usage"))?;
    let mut disks = Disks {
        backend,
        disks: Vec::with_capacity(n),
    };
    let mut times = Vec::with_capacity(n);
    let ext = match backend.kind().as_str() {
        "qcow2" => "qcow2",
        _ => "raw",
    };
    for i in 0..n {
        let dest = dir.join(format!("clone-{i}.{ext}"));
        let t = Instant::now();
        let disk = backend
            .clone_disk(base, &dest, None)
            .map_err(err("clone"))?;
        times.push(t.elapsed());
        disks.disks.push(disk);
    }
    // SAFETY: sync has no preconditions; it makes the pool's used figure settle.
    unsafe { libc::sync() };
    let after = backend.pool_usage().map_err(err("pool usage"))?;
    let mut own = 0;
    let mut own_exact = true;
    for d in &disks.disks {
        let u = backend.disk_usage(d).map_err(err("disk usage"))?;
        own += u.own_bytes;
        own_exact &= u.exact;
    }
    drop(disks);
    times.sort();
    Ok(Row {
        backend: backend.kind().to_string(),
        base: base_label.into(),
        extents,
        clones: n,
        p50: percentile(&times, 0.5),
        p90: percentile(&times, 0.9),
        max: times.last().copied().unwrap_or_default(),
        pool_growth: i128::from(after.used_bytes) - i128::from(before.used_bytes),
        own,
        own_exact,
    })
}

fn fmt_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_bytes(b: i128) -> String {
    let sign = if b < 0 { "-" } else { "" };
    let a = b.unsigned_abs() as f64;
    if a >= GIB as f64 {
        format!("{sign}{:.2} GiB", a / GIB as f64)
    } else if a >= MIB as f64 {
        format!("{sign}{:.1} MiB", a / MIB as f64)
    } else if a >= 1024.0 {
        format!("{sign}{:.0} KiB", a / 1024.0)
    } else {
        format!("{sign}{a:.0} B")
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn reflink_rows(root: &Path, n: usize, rows: &mut Vec<Row>) -> BenchResult<()> {
    if !is_root() {
        return Err("not root: cannot loop-mount an XFS pool".into());
    }
    let pool = make_xfs_pool(&root.join("pool.img"), 16 * GIB, &root.join("pool"))
        .map(|p| PoolGuard(Some(p)))
        .map_err(err("making the XFS pool"))?;
    let mnt = pool
        .0
        .as_ref()
        .map(|p| p.mount_point.clone())
        .ok_or("no pool")?;
    let backend = ReflinkBackend::new(&mnt).map_err(err("reflink"))?;
    let clones = mnt.join("clones");
    std::fs::create_dir_all(&clones).map_err(|e| e.to_string())?;

    let base1 = mnt.join("base-1g.ext4");
    write_base(&base1, GIB)?;
    rows.push(bench_clones(
        &backend,
        &base1,
        "1 GiB (written)",
        &clones,
        n,
    )?);
    std::fs::remove_file(&base1).map_err(|e| e.to_string())?;

    let base10 = mnt.join("base-10g.ext4");
    fallocate_base(&base10, 10 * GIB)?;
    rows.push(bench_clones(
        &backend,
        &base10,
        "10 GiB (fallocated)",
        &clones,
        n,
    )?);
    std::fs::remove_file(&base10).map_err(|e| e.to_string())?;

    let frag = mnt.join("base-frag.ext4");
    fragmented_base(&frag, GIB, 64 * 1024)?;
    rows.push(bench_clones(
        &backend,
        &frag,
        "1 GiB (4 KiB every 64 KiB)",
        &clones,
        n,
    )?);
    std::fs::remove_file(&frag).map_err(|e| e.to_string())?;

    // A real root filesystem image, copied into the pool (holes kept) once.
    if let Some(image) = std::env::var_os("ATELIER_BENCH_IMAGE").map(PathBuf::from) {
        let real = mnt.join("base-real.ext4");
        let copied = CopyBackend::new(&mnt)
            .clone_disk(&image, &real, None)
            .map_err(err("copying ATELIER_BENCH_IMAGE into the pool"))?;
        let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
        let label = format!(
            "{} ({})",
            image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            fmt_bytes(i128::from(size))
        );
        let row = bench_clones(&backend, &real, &label, &clones, n);
        let _ = std::fs::remove_file(&copied.path);
        rows.push(row?);
    }
    drop(pool);
    Ok(())
}

fn host_rows(root: &Path, n: usize, rows: &mut Vec<Row>) -> BenchResult<()> {
    let dir = root.join("host");
    let clones = dir.join("clones");
    std::fs::create_dir_all(&clones).map_err(|e| e.to_string())?;
    let base1 = dir.join("base-1g.ext4");
    write_base(&base1, GIB)?;

    let qcow2 = Qcow2Backend::new(&dir);
    match bench_clones(&qcow2, &base1, "1 GiB (written)", &clones, n) {
        Ok(row) => {
            rows.push(row);
            let base10 = dir.join("base-10g.ext4");
            sparse_base(&base10, 10 * GIB)?;
            rows.push(bench_clones(
                &qcow2,
                &base10,
                "10 GiB (sparse)",
                &clones,
                n,
            )?);
            std::fs::remove_file(&base10).map_err(|e| e.to_string())?;
        }
        Err(e) => println!("qcow2 skipped: {e}"),
    }

    let copy = CopyBackend::new(&dir);
    rows.push(bench_clones(&copy, &base1, "1 GiB (written)", &clones, n)?);
    println!("copy of the 10 GiB base skipped: {n} full copies of 10 GiB are not cheap enough");
    std::fs::remove_file(&base1).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and must not set off a minute of disk-heavy work.
    if !std::env::args().any(|a| a == "--bench") {
        println!("storage benchmark: run it with `cargo bench -p atelier-vmm --bench storage`");
        return;
    }
    let n: usize = std::env::var("ATELIER_BENCH_CLONES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20);
    let parent = std::env::var_os("ATELIER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = match tempfile::Builder::new()
        .prefix("atelier-storage-bench")
        .tempdir_in(&parent)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot make a directory in {}: {e}", parent.display());
            std::process::exit(1);
        }
    };
    let host_fs = filesystem_name(root.path()).unwrap_or_else(|_| "?".into());
    println!(
        "storage clone benchmark: {n} clones per row, kept until all are made; host dir {} ({host_fs})",
        root.path().display()
    );

    let mut rows = Vec::new();
    if let Err(e) = reflink_rows(root.path(), n, &mut rows) {
        println!("reflink skipped: {e}");
    }
    if let Err(e) = host_rows(root.path(), n, &mut rows) {
        println!("host backends failed: {e}");
    }

    let copy = rows
        .iter()
        .find(|r| r.backend == "copy")
        .map(|r| (r.p50, r.own / r.clones.max(1) as u64));
    println!();
    println!(
        "| backend | base | base extents | clones | clone p50 | p90 | max | pool growth ({n} clones) | own usage ({n} clones) | p50 vs copy (1 GiB) | own vs copy |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let (speed, space) = match copy {
            Some((cp50, cown)) if r.backend != "copy" => {
                let speed = if r.p50.is_zero() {
                    "—".into()
                } else {
                    format!("{:.0}× faster", cp50.as_secs_f64() / r.p50.as_secs_f64())
                };
                let per_clone = r.own / r.clones.max(1) as u64;
                let space = if per_clone == 0 {
                    "0 (nothing own)".into()
                } else {
                    format!("1/{:.0}", cown as f64 / per_clone as f64)
                };
                (speed, space)
            }
            Some(_) => ("baseline".into(), "baseline".into()),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
            r.backend,
            r.base,
            r.extents,
            r.clones,
            fmt_time(r.p50),
            fmt_time(r.p90),
            fmt_time(r.max),
            fmt_bytes(r.pool_growth),
            if r.own_exact { "" } else { "≤ " },
            fmt_bytes(i128::from(r.own)),
            speed,
            space,
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.backend == "reflink" && r.p50 > Duration::from_millis(10))
    {
        println!(
            "\nnote: reflink clones of {} took {} at p50: a reflink costs per extent ({} here), \
             not per byte",
            r.base,
            fmt_time(r.p50),
            r.extents
        );
    }
}
