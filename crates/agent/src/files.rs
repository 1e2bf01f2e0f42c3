//! File access confined to the configured roots.
//!
//! Every path goes through [`Roots::resolve`]: `..` components are refused, absolute paths
//! must lie in a root, and every existing prefix is checked after following symlinks, so a
//! symlink inside a root that leads out of the roots cannot be read, written, listed,
//! created through or deleted.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use atelier_proto::{DirListing, FileKind, FileStat};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ApiResult};

/// Largest accepted file upload.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Root {
    /// As configured (absolute).
    configured: PathBuf,
    /// Canonical form, used for every check.
    canonical: PathBuf,
}

/// The directories file operations are confined to. The first is the default for relative
/// paths (and for exec's working directory).
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<Root>,
}

/// A path after confinement checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The entry itself (a symlink in last position is not followed), with every existing
    /// parent canonicalized.
    pub path: PathBuf,
    /// Where the entry leads: `path` with a final symlink followed.
    pub target: PathBuf,
    /// Whether `path` exists (a dangling symlink exists).
    pub exists: bool,
    /// Whether `path` is a symlink.
    pub is_symlink: bool,
}

fn is_enoent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Normalizes `.` and `..` lexically.
fn normalize_lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Roots {
    /// Creates missing roots and canonicalizes them.
    pub fn new(paths: &[PathBuf]) -> io::Result<Self> {
        if paths.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one --root is required",
            ));
        }
        let cwd = std::env::current_dir()?;
        let mut roots = Vec::new();
        for p in paths {
            let configured = normalize_lexical(&cwd.join(p));
            fs::create_dir_all(&configured)?;
            let canonical = fs::canonicalize(&configured)?;
            if !fs::metadata(&canonical)?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("root {} is not a directory", p.display()),
                ));
            }
            roots.push(Root {
                configured,
                canonical,
            });
        }
        Ok(Self { roots })
    }

    /// The first root (canonical).
    pub fn first(&self) -> &Path {
        &self.roots[0].canonical
    }

    /// Whether `p` (canonical) lies inside a root.
    pub fn contains(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(&r.canonical))
    }

    /// Whether `p` is one of the roots themselves.
    pub fn is_root(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p == r.canonical)
    }

    /// Checks `input` against the roots and resolves it. See the module docs.
    pub fn resolve(&self, input: &str) -> ApiResult<Resolved> {
        if input.is_empty() {
            return Err(ApiError::invalid("path is required"));
        }
        if input.contains('\0') {
            return Err(ApiError::invalid("path contains a NUL byte"));
        }
        let p = Path::new(input);
        let mut normal: Vec<&OsStr> = Vec::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    return Err(ApiError::forbidden_path(format!(
                        "{input}: `..` components are not allowed"
                    )))
                }
                Component::Normal(s) => normal.push(s),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        let (root, rel): (&Root, Vec<&OsStr>) = if p.is_absolute() {
            let abs: PathBuf = std::iter::once(OsStr::new("/"))
                .chain(normal.iter().copied())
                .collect();
            // The deepest matching root wins (roots may nest).
            let mut best: Option<(&Root, PathBuf)> = None;
            for r in &self.roots {
                for base in [&r.canonical, &r.configured] {
                    if let Ok(rest) = abs.strip_prefix(base) {
                        let better = match &best {
                            None => true,
                            Some((b, _)) => {
                                r.canonical.as_os_str().len() > b.canonical.as_os_str().len()
                            }
                        };
                        if better {
                            best = Some((r, rest.to_path_buf()));
                        }
                    }
                }
            }
            let Some((root, rest)) = best else {
                return Err(ApiError::forbidden_path(format!(
                    "{input}: outside the allowed roots"
                )));
            };
            let rel_owned: Vec<&OsStr> = {
                // `rest` borrows from `abs`; re-derive the components from `normal` by count.
                let skip = normal.len() - rest.components().count();
                normal[skip..].to_vec()
            };
            (root, rel_owned)
        } else {
            (&self.roots[0], normal)
        };
        self.walk(input, root, &rel)
    }

    fn walk(&self, input: &str, root: &Root, rel: &[&OsStr]) -> ApiResult<Resolved> {
        let escape = |link: &Path| {
            ApiError::forbidden_path(format!(
                "{input}: symlink {} leads outside the allowed roots",
                link.display()
            ))
        };
        let mut cur = root.canonical.clone();
        for (i, c) in rel.iter().enumerate() {
            let next = cur.join(c);
            let last = i + 1 == rel.len();
            let rest = || {
                let mut p = next.clone();
                for r in &rel[i + 1..] {
                    p.push(r);
                }
                p
            };
            match fs::symlink_metadata(&next) {
                Err(e) if is_enoent(&e) => {
                    let p = rest();
                    return Ok(Resolved {
                        target: p.clone(),
                        path: p,
                        exists: false,
                        is_symlink: false,
                    });
                }
                Err(e) => return Err(ApiError::from_io(&e, &next)),
                Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(&next) {
                    Ok(t) => {
                        if !self.contains(&t) {
                            return Err(escape(&next));
                        }
                        if last {
                            return Ok(Resolved {
                                path: next,
                                target: t,
                                exists: true,
                                is_symlink: true,
                            });
                        }
                        cur = t;
                    }
                    Err(e) if is_enoent(&e) => {
                        // Dangling: judge where it would lead.
                        let link =
                            fs::read_link(&next).map_err(|e| ApiError::from_io(&e, &next))?;
                        let t = normalize_lexical(&cur.join(link));
                        if !self.contains(&t) {
                            return Err(escape(&next));
                        }
                        if last {
                            return Ok(Resolved {
                                path: next,
                                target: t,
                                exists: true,
                                is_symlink: true,
                            });
                        }
                        let p = rest();
                        return Ok(Resolved {
                            target: p.clone(),
                            path: p,
                            exists: false,
                            is_symlink: false,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(escape(&next)),
                    Err(e) => return Err(ApiError::from_io(&e, &next)),
                },
                Ok(_) => cur = next,
            }
        }
        Ok(Resolved {
            target: cur.clone(),
            path: cur,
            exists: true,
            is_symlink: false,
        })
    }
}

fn modified_ms(meta: &Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    }
}

/// Builds a [`FileStat`] for `path` from its (l)stat `meta`.
pub fn file_stat(path: &Path, meta: &Metadata) -> FileStat {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        path: path.to_string_lossy().into_owned(),
        kind,
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
        modified_ms: modified_ms(meta),
    }
}

fn lstat(path: &Path) -> ApiResult<FileStat> {
    let meta = fs::symlink_metadata(path).map_err(|e| ApiError::from_io(&e, path))?;
    Ok(file_stat(path, &meta))
}

fn not_found(input: &str) -> ApiError {
    ApiError::not_found(format!("{input}: no such file or directory"))
}

/// `GET /files/stat`: the entry itself (symlinks are reported as such).
pub fn stat(roots: &Roots, input: &str) -> ApiResult<FileStat> {
    let r = roots.resolve(input)?;
    if !r.exists {
        return Err(not_found(input));
    }
    lstat(&r.path)
}

/// `GET /files/list`: entries sorted by name.
pub fn list(roots: &Roots, input: &str) -> ApiResult<DirListing> {
    let r = roots.resolve(input)?;
    if !r.exists {
        return Err(not_found(input));
    }
    let meta = fs::metadata(&r.target).map_err(|e| ApiError::from_io(&e, &r.path))?;
    if !meta.is_dir() {
        return Err(ApiError::not_a_directory(format!(
            "{input}: not a directory"
        )));
    }
    let rd = fs::read_dir(&r.target).map_err(|e| ApiError::from_io(&e, &r.path))?;
    let mut entries = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| ApiError::from_io(&e, &r.path))?;
        let path = r.path.join(ent.file_name());
        // An entry may vanish between readdir and lstat; skip it then.
        if let Ok(meta) = fs::symlink_metadata(r.target.join(ent.file_name())) {
            entries.push(file_stat(&path, &meta));
        }
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(DirListing {
        path: r.path.to_string_lossy().into_owned(),
        entries,
    })
}

fn check_inside(roots: &Roots, dir: &Path, input: &str) -> ApiResult<()> {
    let canon = fs::canonicalize(dir).map_err(|e| ApiError::from_io(&e, dir))?;
    if roots.contains(&canon) {
        Ok(())
    } else {
        Err(ApiError::forbidden_path(format!(
            "{input}: leads outside the allowed roots"
        )))
    }
}

fn create_dirs(roots: &Roots, dir: &Path, input: &str) -> ApiResult<()> {
    fs::create_dir_all(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTDIR) => {
            ApiError::not_a_directory(format!("{input}: a parent of it is not a directory"))
        }
        _ => ApiError::from_io(&e, dir),
    })?;
    // Re-check after creation: a racing symlink swap must not lead us out.
    check_inside(roots, dir, input)
}

/// `POST /files/mkdir`: creates the directory and its parents; fine if it exists.
pub fn mkdir(roots: &Roots, input: &str) -> ApiResult<FileStat> {
    let r = roots.resolve(input)?;
    if r.exists {
        let meta = fs::metadata(&r.target).map_err(|e| ApiError::from_io(&e, &r.path))?;
        if meta.is_dir() {
            return Ok(file_stat(&r.path, &meta));
        }
        return Err(ApiError::already_exists(format!(
            "{input}: exists and is not a directory"
        )));
    }
    create_dirs(roots, &r.path, input)?;
    lstat(&r.path)
}

/// `DELETE /files`: files, symlinks (not their targets), empty directories, or whole trees
/// with `recursive`.
pub fn delete(roots: &Roots, input: &str, recursive: bool) -> ApiResult<()> {
    let r = roots.resolve(input)?;
    if !r.exists {
        return Err(not_found(input));
    }
    if roots.is_root(&r.path) {
        return Err(ApiError::forbidden_path(format!(
            "{input}: a root cannot be deleted"
        )));
    }
    let meta = fs::symlink_metadata(&r.path).map_err(|e| ApiError::from_io(&e, &r.path))?;
    let res = if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(&r.path)
        } else {
            fs::remove_dir(&r.path)
        }
    } else {
        fs::remove_file(&r.path)
    };
    res.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => ApiError::conflict(format!(
            "{input}: directory not empty (pass recursive=true)"
        )),
        _ => ApiError::from_io(&e, &r.path),
    })
}

/// Opens a file for reading (`GET /files/content`), refusing directories.
pub fn open_for_read(roots: &Roots, input: &str) -> ApiResult<(fs::File, u64)> {
    let r = roots.resolve(input)?;
    if !r.exists {
        return Err(not_found(input));
    }
    let meta = fs::metadata(&r.target).map_err(|e| ApiError::from_io(&e, &r.path))?;
    if meta.is_dir() {
        return Err(ApiError::is_a_directory(format!("{input}: is a directory")));
    }
    let f = fs::File::open(&r.target).map_err(|e| ApiError::from_io(&e, &r.path))?;
    Ok((f, meta.len()))
}

/// Where a write goes and what it must preserve.
pub struct WritePlan {
    dest: PathBuf,
    tmp: PathBuf,
    owner: Option<(u32, u32)>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Checks a write to `input` and prepares the parent directory.
pub fn plan_write(roots: &Roots, input: &str) -> ApiResult<WritePlan> {
    let r = roots.resolve(input)?;
    // Write through a symlink to its (checked) target when it exists; a dangling link is
    // replaced by the new file.
    let dest = if r.is_symlink && fs::metadata(&r.target).is_ok() {
        r.target.clone()
    } else {
        r.path.clone()
    };
    let existing = fs::symlink_metadata(&dest).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(ApiError::is_a_directory(format!("{input}: is a directory")));
    }
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(ApiError::invalid(format!("{input}: not a file path")));
    };
    create_dirs(roots, parent, input)?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(
        ".{}.atelier-{}-{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok(WritePlan {
        owner: existing
            .filter(|m| m.file_type().is_file())
            .map(|m| (m.uid(), m.gid())),
        dest,
        tmp,
    })
}

/// Streams `body` into a temp file next to the destination, applies `mode`, and renames
/// it into place.
pub async fn write_atomic<S, E>(
    plan: WritePlan,
    mut body: S,
    mode: u32,
    limit: u64,
) -> ApiResult<FileStat>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&plan.tmp)
        .await
        .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
    let res: ApiResult<()> = async {
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the body: {e}")))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
        }
        file.flush()
            .await
            .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
        if let Some((uid, gid)) = plan.owner {
            // Keep the owner of a replaced file (only possible as root; best effort).
            let _ =
                std::os::unix::fs::fchown(std::os::fd::AsFd::as_fd(&file), Some(uid), Some(gid));
            // chown may clear setuid bits; re-apply the mode.
            let _ = file.set_permissions(fs::Permissions::from_mode(mode)).await;
        }
        file.sync_all()
            .await
            .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
        tokio::fs::rename(&plan.tmp, &plan.dest)
            .await
            .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = res {
        let _ = tokio::fs::remove_file(&plan.tmp).await;
        return Err(e);
    }
    let meta = tokio::fs::symlink_metadata(&plan.dest)
        .await
        .map_err(|e| ApiError::from_io(&e, &plan.dest))?;
    Ok(file_stat(&plan.dest, &meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Roots) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/f.txt"), "x").unwrap();
        let roots = Roots::new(&[root]).unwrap();
        (dir, roots)
    }

    #[test]
    fn relative_and_absolute_paths_resolve_inside() {
        let (_d, roots) = setup();
        let r = roots.resolve("sub/f.txt").unwrap();
        assert!(r.exists);
        assert_eq!(r.path, roots.first().join("sub/f.txt"));
        let abs = roots.first().join("sub/./f.txt");
        let r2 = roots.resolve(abs.to_str().unwrap()).unwrap();
        assert_eq!(r2.path, r.path);
        let r3 = roots.resolve("sub/new/deeper.txt").unwrap();
        assert!(!r3.exists);
        assert_eq!(r3.path, roots.first().join("sub/new/deeper.txt"));
        assert_eq!(roots.resolve(".").unwrap().path, roots.first());
    }

    #[test]
    fn traversal_and_outside_paths_are_refused() {
        let (_d, roots) = setup();
        for bad in ["../x", "sub/../../x", "/etc/passwd", "/"] {
            let e = roots.resolve(bad).unwrap_err();
            assert_eq!(e.body.error.code, "forbidden_path", "{bad}");
        }
        assert_eq!(
            roots.resolve("").unwrap_err().body.error.code,
            "invalid_value"
        );
    }

    #[test]
    fn symlinks_out_of_the_roots_are_refused() {
        let (d, roots) = setup();
        let root = roots.first().to_path_buf();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("/nonexistent/x", root.join("dangling_out")).unwrap();
        symlink("sub/f.txt", root.join("inside")).unwrap();
        symlink("sub/missing", root.join("dangling_in")).unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, root.join("out_dir")).unwrap();
        for bad in [
            "etc",
            "etc/passwd",
            "etc/new-file",
            "dangling_out",
            "out_dir/x",
        ] {
            let e = roots.resolve(bad).unwrap_err();
            assert_eq!(e.body.error.code, "forbidden_path", "{bad}");
        }
        let r = roots.resolve("inside").unwrap();
        assert!(r.is_symlink);
        assert_eq!(r.target, root.join("sub/f.txt"));
        let r = roots.resolve("dangling_in").unwrap();
        assert!(r.is_symlink && r.exists);
    }

    #[test]
    fn symlink_loops_are_refused() {
        let (_d, roots) = setup();
        let root = roots.first().to_path_buf();
        symlink("loop_b", root.join("loop_a")).unwrap();
        symlink("loop_a", root.join("loop_b")).unwrap();
        assert!(roots.resolve("loop_a").is_err());
    }
}
