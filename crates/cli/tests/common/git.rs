//! Git repositories for tests: a bare origin with one commit on `main`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// `git daemon` serving `base` read-only on the host's loopback; stopped when dropped.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The daemon itself, not the `git daemon` wrapper, so that killing it stops it.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let daemon =
            PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare `app.git` under `<dir>/repos` with one commit (a README) on `main`, served by a
/// `git daemon` on the host's loopback; a sandbox that names the daemon's port as a host
/// service clones it from `git://172.16.0.1:<port>/app.git`.
pub fn served_origin(dir: &Path) -> GitDaemon {
    let repos = dir.join("repos");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    git(&work, &["init", "--quiet"]);
    std::fs::write(work.join("README.md"), "# app\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "initial"]);
    git(
        dir,
        &["clone", "--quiet", "--bare", "work", "repos/app.git"],
    );
    GitDaemon::start(&repos)
}

impl GitDaemon {
    /// The served repo's URL as a sandbox reaches it through its host-service forward.
    pub fn sandbox_url(&self) -> String {
        format!("git://172.16.0.1:{}/app.git", self.port)
    }
}
