//! Git repositories for tests: a bare origin with one commit on `main`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` (with an identity and `main` as the default branch); panics with
/// its stderr on failure, returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repo `dir/origin.git` with one commit (README.md) on `main`, and the work
/// tree it came from (`dir/work`, whose `origin` remote is the bare repo, so a test can
/// move the branch by pushing). Returns the origin's `file://` URL and the work tree.
pub fn origin_with_work(dir: &Path) -> (String, PathBuf) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "--quiet"]);
    std::fs::write(work.join("README.md"), "# app\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "initial"]);
    let bare = dir.join("origin.git");
    git(
        dir,
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    (format!("file://{}", bare.display()), work)
}

/// [`origin_with_work`]'s URL alone.
pub fn origin(dir: &Path) -> String {
    origin_with_work(dir).0
}
