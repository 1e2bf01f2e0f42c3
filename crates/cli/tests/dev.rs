//! `atelier dev` for real: the CLI in a tmux pane, a real manager, and (QEMU) a real
//! microVM with the folder shared in; the local driver covers the refusals.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{atelier_bin, eventually, processes_under, Manager};
use serde_json::json;

use atelier_testkit::{data_dir_with_image_cache as qemu_data_dir, ensure_guest_agent};

/// How long a microVM may take to give a prompt under emulation.
const BOOT: Duration = Duration::from_secs(180);
/// How long a command typed into a running shell may take to answer.
const ANSWER: Duration = Duration::from_secs(30);

/// A detached tmux session on a server of its own (its socket in a temporary directory),
/// killed when dropped.
struct Pane {
    socket: PathBuf,
    name: String,
}

impl Pane {
    /// Runs `script` under `sh -c` in a new 160×50 session.
    fn start(dir: &Path, script: &str) -> Pane {
        let pane = Pane {
            socket: dir.join("tmux.sock"),
            name: "dev".into(),
        };
        let status = pane
            .tmux()
            .args([
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
                "-s",
                &pane.name,
            ])
            .arg(script)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        pane
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// What the pane shows, with its scrollback.
    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-J", "-S", "-1000", "-t", &self.name])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", &self.name, "-l", line])
            .status()
            .expect("run tmux send-keys");
        assert!(status.success());
        let status = self
            .tmux()
            .args(["send-keys", "-t", &self.name, "Enter"])
            .status()
            .expect("run tmux send-keys");
        assert!(status.success());
    }

    /// Presses Ctrl-C.
    fn interrupt(&self) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", &self.name, "C-c"])
            .status()
            .expect("run tmux send-keys");
        assert!(status.success());
    }

    /// Waits until the pane shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {needle:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// `atelier dev <args>` against `m`, run from `cwd`, its exit code written to `exit_file`
/// (`EXIT=<code>`), the pane kept open afterwards.
fn dev_script(m: &Manager, cwd: &Path, args: &str, exit_file: &Path) -> String {
    format!(
        "cd '{cwd}' && ATELIER_URL='{url}' ATELIER_TOKEN='{token}' '{bin}' dev {args}; \
         echo EXIT=$? > '{exit}'; sleep 600",
        cwd = cwd.display(),
        url = m.url,
        token = m.token,
        bin = atelier_bin().display(),
        exit = exit_file.display(),
    )
}

/// `atelier dev --folder <dir>/project <args>` in a pane, run from `dir`: the pane, the
/// folder, and the file its exit code goes to.
fn dev_in_pane(m: &Manager, dir: &Path, args: &str) -> (Pane, PathBuf, PathBuf) {
    let folder = dir.join("project");
    std::fs::create_dir(&folder).unwrap();
    let exit_file = dir.join("exit");
    let script = dev_script(
        m,
        dir,
        &format!("--folder '{}' {args}", folder.display()),
        &exit_file,
    );
    (Pane::start(dir, &script), folder, exit_file)
}

/// The sandbox id `atelier dev` announced.
fn announced_id(screen: &str) -> String {
    screen
        .lines()
        .find_map(|l| l.strip_prefix("atelier: sandbox "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sandbox announced in:\n{screen}"))
        .to_owned()
}

fn wait_exit_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "atelier dev did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn qemu_manager(dir: &Path, env: &[(&str, &str)]) -> Manager {
    let data = qemu_data_dir(dir, "");
    Manager::start_with_env(&data, &["--driver", "qemu"], env)
}

macro_rules! require_qemu_and_tmux {
    () => {
        atelier_testkit::require!(atelier_testkit::qemu_missing()
            .or_else(|| atelier_testkit::missing(&[("tmux", "tmux")])));
        ensure_guest_agent();
    };
}

#[tokio::test]
async fn atelier_dev_shares_the_folder_live_gives_the_secrets_as_env_and_exits_with_the_shell() {
    require_qemu_and_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let m = qemu_manager(dir.path(), &[]);
    let api = m.client();
    let secret = "dev-SECRET-7f3a91";
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "devshell",
                "secrets": {"env": [{"name": "DEV_SECRET", "value": secret}]},
                "resources": {"vcpus": 1, "memory_mib": 512, "disk_mib": 1024},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let folder = dir.path().join("src");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("host.txt"), "written-on-the-host\n").unwrap();
    let exit_file = dir.path().join("exit");

    // No --folder: the current directory is shared.
    let started = Instant::now();
    let pane = Pane::start(
        dir.path(),
        &dev_script(
            &m,
            &folder,
            "--workspace devshell --image minimal",
            &exit_file,
        ),
    );
    let screen = pane.wait_for("is at /workspace", BOOT);
    let id = announced_id(&screen);
    pane.type_line("echo READY-$((6 * 7)) \"[$(pwd)]\"");
    pane.wait_for("READY-42 [/workspace]", BOOT);
    eprintln!(
        "atelier dev: a shell answered {:?} after the command started",
        started.elapsed()
    );

    // A write in the guest is on the host as soon as the shell has made it.
    pane.type_line("echo from-the-guest > /workspace/guest.txt && echo WROTE-$((1 + 1))");
    pane.wait_for("WROTE-2", ANSWER);
    assert_eq!(
        std::fs::read_to_string(folder.join("guest.txt")).unwrap(),
        "from-the-guest\n"
    );
    // The host's files, old and new, are the guest's.
    pane.type_line("cat /workspace/host.txt");
    pane.wait_for("written-on-the-host", ANSWER);
    std::fs::write(folder.join("later.txt"), "made-after-boot\n").unwrap();
    pane.type_line("cat /workspace/later.txt");
    pane.wait_for("made-after-boot", ANSWER);
    pane.type_line("mount | grep -c ' /workspace ' | sed 's/^/MOUNTS=/'");
    pane.wait_for("MOUNTS=1", ANSWER);

    // The workspace's secret is in the shell's environment and in no shared file.
    pane.type_line("echo \"SECRET=[$DEV_SECRET]\"");
    pane.wait_for(&format!("SECRET=[{secret}]"), ANSWER);
    for f in files_under(&folder) {
        let content = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&content).contains(secret),
            "{} holds the secret",
            f.display()
        );
    }

    pane.type_line("exit 7");
    assert_eq!(wait_exit_file(&exit_file, ANSWER), "EXIT=7");
    let s = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(s.body["state"], "destroyed", "{}", s.body);
    let sandbox_dir = m.data_dir.join("sandboxes").join(&id);
    assert!(!sandbox_dir.exists(), "the sandbox's directory is gone");
    assert!(
        processes_under(&sandbox_dir).is_empty(),
        "neither QEMU nor virtiofsd outlives the sandbox"
    );
}

#[tokio::test]
async fn ctrl_c_while_the_sandbox_boots_leaves_no_sandbox_behind() {
    require_qemu_and_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let m = qemu_manager(dir.path(), &[]);
    let api = m.client();
    let (pane, _, exit_file) = dev_in_pane(&m, dir.path(), "--image minimal");
    pane.wait_for("starting a minimal sandbox", BOOT);
    // The request is in: the sandbox is recorded and booting.
    let booting = eventually(BOOT, "the sandbox to be recorded", || async {
        let list = api.get("/sandboxes").await.body;
        list["sandboxes"].as_array()?.first().cloned()
    })
    .await;
    assert_ne!(
        booting["state"], "running",
        "booted before the interrupt: {booting}"
    );
    pane.interrupt();
    assert_eq!(wait_exit_file(&exit_file, ANSWER), "EXIT=130");
    assert!(pane.screen().contains("interrupted; removing the sandbox"));
    let id = booting["id"].as_str().unwrap();
    let gone = eventually(BOOT, "the sandbox destroyed", || async {
        let s = api.get(&format!("/sandboxes/{id}")).await.body;
        (s["state"] == "destroyed").then_some(s)
    })
    .await;
    assert_eq!(gone["id"], id);
    let left = api.get("/sandboxes").await.body;
    assert_eq!(
        left["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{left}"
    );
}

#[tokio::test]
async fn atelier_dev_keeps_the_sandbox_with_keep() {
    require_qemu_and_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let m = qemu_manager(dir.path(), &[]);
    let api = m.client();
    let (pane, folder, exit_file) = dev_in_pane(&m, dir.path(), "--image minimal --keep");
    let id = announced_id(&pane.wait_for("is at /workspace", BOOT));
    pane.type_line("touch /workspace/kept && echo DONE-$((2 + 3))");
    pane.wait_for("DONE-5", BOOT);
    assert!(folder.join("kept").is_file());
    pane.type_line("exit");
    assert_eq!(wait_exit_file(&exit_file, ANSWER), "EXIT=0");
    let s = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(s.body["state"], "running", "{}", s.body);
    assert_eq!(
        s.body["shared_folders"][0]["host_path"],
        std::fs::canonicalize(&folder).unwrap().to_str().unwrap()
    );
    assert!(pane.screen().contains(&format!("sandbox {id} kept")));
    let gone = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(gone.body["state"], "destroyed", "{}", gone.body);
}

#[tokio::test]
async fn without_virtiofsd_a_kernel_lacking_9p_is_refused_with_the_reason() {
    require_qemu_and_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let m = qemu_manager(dir.path(), &[("ATELIER_VIRTIOFSD", "none")]);
    let api = m.client();
    let system = api.get("/system").await;
    assert!(
        system.body["driver_notes"]
            .to_string()
            .contains("shared folders: 9p"),
        "{}",
        system.body
    );
    let host = tempfile::tempdir().unwrap();
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"image": "minimal", "vcpus": 1, "memory_mib": 512,
                   "shared_folders": [{"host_path": host.path(), "guest_path": "/workspace"}]}),
        )
        .await;
    let error = r.body["error"].as_str().unwrap_or_default().to_owned();
    if r.body["state"] == "running" {
        // A kernel with 9p: the folder must then really be there.
        let id = r.body["id"].as_str().unwrap();
        let out = api
            .exec(id, "sh", &["-c", "mount | grep -c ' /workspace '"])
            .await;
        assert_eq!(out.body["stdout"], "1\n", "{}", out.body);
    } else {
        assert_eq!(r.body["state"], "error", "{}", r.body);
        assert!(
            error.contains("virtiofsd") && error.contains("CONFIG_NET_9P"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_missing_folder_and_malformed_shared_folders_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();

    let missing = dir.path().join("no-such-folder");
    let out = Command::new(atelier_bin())
        .args(["dev", "--image", "minimal", "--folder"])
        .arg(&missing)
        .env("ATELIER_URL", &m.url)
        .env("ATELIER_TOKEN", &m.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the folder {} does not exist", missing.display())),
        "{stderr}"
    );
    let list = api.get("/sandboxes").await;
    assert_eq!(list.body["sandboxes"], json!([]), "nothing was created");

    for (folders, field, says) in [
        (
            json!([{"host_path": missing, "guest_path": "/workspace"}]),
            "shared_folders[0].host_path",
            "does not exist",
        ),
        (
            json!([{"host_path": dir.path(), "guest_path": "workspace"}]),
            "shared_folders[0].guest_path",
            "absolute",
        ),
        (
            json!([{"host_path": dir.path(), "guest_path": "/etc/app"}]),
            "shared_folders[0].guest_path",
            "system directory /etc",
        ),
    ] {
        let r = api
            .post("/sandboxes", json!({"shared_folders": folders}))
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        let fields = &r.body["error"]["details"]["fields"];
        assert_eq!(fields[0]["field"], field, "{}", r.body);
        assert!(
            fields[0]["message"].as_str().unwrap().contains(says),
            "{}",
            r.body
        );
    }
    let r = api
        .post(
            "/sandboxes",
            json!({"shared_folders": [{"host_path": dir.path(), "guest_path": "/w", "mode": "rw"}]}),
        )
        .await;
    assert_eq!(r.status, 422, "unknown keys are refused: {}", r.body);
}

#[tokio::test]
async fn the_local_driver_links_the_folder_into_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let host = dir.path().join("src");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("host.txt"), "on-the-host\n").unwrap();
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"shared_folders": [{"host_path": host, "guest_path": "/workspace"}]}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let out = api
        .exec(
            id,
            "sh",
            &["-c", "cat workspace/host.txt && echo x > workspace/new.txt"],
        )
        .await;
    assert_eq!(out.body["stdout"], "on-the-host\n", "{}", out.body);
    assert_eq!(
        std::fs::read_to_string(host.join("new.txt")).unwrap(),
        "x\n"
    );
    api.delete(&format!("/sandboxes/{id}")).await;
    assert!(
        host.join("host.txt").is_file(),
        "destroying keeps the host's folder"
    );
}

#[tokio::test]
async fn atelier_dev_with_the_dev_image_gives_a_shell_with_the_agent_clis_and_the_folder() {
    atelier_testkit::require!(atelier_testkit::qemu_missing().or_else(
        || atelier_testkit::missing(&[
            ("tmux", "tmux"),
            ("mmdebstrap", "mmdebstrap"),
            ("npm", "npm")
        ])
    ));
    ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
    let m = qemu_manager(dir.path(), &[]);
    let api = m.client();
    // The image first (cached across runs; minutes on a fresh machine), then the shell.
    let built = api
        .send(
            api.req(reqwest::Method::POST, "/images/dev/build")
                .timeout(Duration::from_secs(2400)),
        )
        .await;
    assert_eq!(built.status, 200, "{}", built.body);
    let (pane, folder, exit_file) = dev_in_pane(&m, dir.path(), "--image dev");
    pane.wait_for("is at /workspace", BOOT);
    // The seed's toolset is on the shell's PATH, Node 22 first.
    pane.type_line(
        "codex --version && claude --version && opencode --version && \
         node --version | sed 's/^/NODE=/' && cd /workspace && pwd | sed 's/^/AT=/'",
    );
    let screen = pane.wait_for("AT=/workspace", BOOT);
    assert!(screen.contains("codex-cli 0.169.0"), "{screen}");
    assert!(screen.contains("2.1.328"), "{screen}");
    assert!(screen.contains("1.18.33"), "{screen}");
    assert!(screen.contains("NODE=v22."), "{screen}");
    // (Each awaited word is computed by the shell, so the typed line never matches.)
    pane.type_line("mount | grep -c ' /workspace ' | sed 's/^/MOUNTS=/'; echo CHECKED-$((2 + 2))");
    let screen = pane.wait_for("CHECKED-4", ANSWER);
    assert!(
        screen.contains("MOUNTS=1"),
        "the folder is mounted at /workspace:\n{screen}"
    );
    pane.type_line(
        "git init -q . && echo made-in-the-dev-shell > notes.md && echo WROTE-$((3 + 3))",
    );
    pane.wait_for("WROTE-6", ANSWER);
    assert_eq!(
        std::fs::read_to_string(folder.join("notes.md")).unwrap(),
        "made-in-the-dev-shell\n"
    );
    assert!(folder.join(".git").is_dir(), "git ran in the shared folder");
    pane.type_line("exit");
    assert_eq!(wait_exit_file(&exit_file, ANSWER), "EXIT=0");
}
