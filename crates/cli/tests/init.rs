//! `atelier init` against scratch roots laid out like a tiny Debian (passwd, group,
//! shadow, fstab, a dpkg status file): the plan it prints, what a real run writes, and
//! that a second run changes nothing. Pools are made (and mounted) inside the scratch
//! root only, and unmounted again, when this machine allows it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every package init checks for, as the dpkg status names them.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "busybox-static",
    "e2fsprogs",
    "xfsprogs",
    "iproute2",
    "iptables",
    "caddy",
];

/// A scratch root: a tiny Debian with `installed` packages in its dpkg database and the
/// others listed as removed (config files left), as dpkg keeps them.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new(installed: &[&str]) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let r = Root { dir };
        r.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
        r.write("etc/group", "root:x:0:\n");
        r.write("etc/shadow", "root:*:20000:0:99999:7:::\n");
        r.write("etc/fstab", "UUID=0a1b2c3d / ext4 errors=remount-ro 0 1\n");
        let mut status = String::new();
        for p in PACKAGES {
            let (state, version) = match (installed.contains(p), *p) {
                (true, "caddy") => ("install ok installed", "2.6.2-6"),
                (true, _) => ("install ok installed", "1.0-1"),
                (false, _) => ("deinstall ok config-files", "1.0-1"),
            };
            status.push_str(&format!(
                "Package: {p}\nStatus: {state}\nPriority: optional\nSection: misc\n\
                 Maintainer: Nobody <nobody@example.com>\nArchitecture: amd64\n\
                 Version: {version}\nDescription: {p}\n\n"
            ));
        }
        r.write("var/lib/dpkg/status", &status);
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("reading {rel} in the root: {e}"))
    }

    fn init(&self, args: &[&str]) -> Output {
        Command::new(common::atelier_bin())
            .arg("init")
            .arg("--root")
            .arg(self.dir.path())
            .args(args)
            .env_remove("ATELIER_DATA_DIR")
            .output()
            .expect("run atelier init")
    }

    /// Every path under the root with what a change would show: kind, mode, owner,
    /// size, mtime, and the bytes of small files.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut pending = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let md = path.symlink_metadata().unwrap();
                let rel = path.strip_prefix(self.dir.path()).unwrap().to_path_buf();
                let mut what = format!(
                    "mode {:o} owner {}:{} len {}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len()
                );
                if rel == Path::new("var/lib/atelier-pool.xfs") {
                    // The mounted pool's own writes (its log, atime updates) reach its
                    // image through the loop device: only its size says what init did.
                } else if md.file_type().is_symlink() {
                    what += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
                } else {
                    what += &format!(" mtime {}.{:09}", md.mtime(), md.mtime_nsec());
                    if md.is_file() && md.len() <= 1 << 20 {
                        what += &format!(" {:?}", std::fs::read(&path).unwrap());
                    }
                }
                if md.is_dir() {
                    pending.push(path);
                }
                out.insert(rel, what);
            }
        }
        out
    }
}

/// Unmounts what init mounted in a scratch root before the root is removed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let ok = Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("could not unmount {}", self.0.display());
            }
        }
    }
}

fn mounted(dir: &Path) -> bool {
    Command::new("findmnt")
        .arg("--mountpoint")
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why a pool cannot be made (and mounted) here, if it cannot.
fn pool_missing() -> Option<String> {
    if !atelier_testkit::is_root() {
        return Some("an XFS pool needs root (mount, loop devices)".into());
    }
    if let Some(why) = atelier_testkit::missing(&[
        ("mkfs.xfs", "xfsprogs"),
        ("xfs_db", "xfsprogs"),
        ("xfs_info", "xfsprogs"),
        ("losetup", "mount"),
        ("findmnt", "util-linux"),
        ("blkid", "util-linux"),
    ]) {
        return Some(why);
    }
    (!Path::new("/dev/loop-control").exists())
        .then(|| "no loop devices here (/dev/loop-control is missing)".to_owned())
}

/// A real run needs root (useradd --root, chown); without it the tests only plan.
fn real_runs_missing() -> Option<String> {
    (!atelier_testkit::is_root()).then(|| "atelier init applies its plan as root only".into())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The plan's lines for one step (its first line and the indented ones after it).
fn step(out: &str, label: &str) -> String {
    let plan = out.split("\nApplying:").next().unwrap_or(out);
    let head = format!("  {label:<9} ");
    let mut lines = vec![];
    let mut inside = false;
    for line in plan.lines() {
        if line.starts_with(&head) {
            inside = true;
        } else if !line.starts_with("            ") {
            inside = false;
        }
        if inside {
            lines.push(line);
        }
    }
    assert!(!lines.is_empty(), "no step {label:?} in:\n{out}");
    lines.join("\n")
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[test]
fn a_dry_run_names_every_step_to_do_and_changes_nothing() {
    let root = Root::new(&[
        "qemu-utils",
        "busybox-static",
        "e2fsprogs",
        "xfsprogs",
        "iproute2",
        "iptables",
    ]);
    let before = root.snapshot();
    // A size of its own: the default depends on this machine's free space.
    let args = [
        "--dry-run",
        "--domain",
        "example.com",
        "--pool-size",
        "300M",
    ];
    let out = ok(&root.init(&args));
    assert_eq!(
        root.snapshot(),
        before,
        "a dry run changed the root:\n{out}"
    );

    let packages = step(&out, "packages");
    assert!(
        packages
            .contains("to do: install qemu-system-x86, caddy (apt-get install -y, through chroot"),
        "{packages}"
    );
    let kvm = step(&out, "kvm");
    let verdict = if kvm_usable() {
        "KVM: usable → "
    } else if Path::new("/dev/kvm").exists() {
        "KVM: not usable → QEMU under TCG emulation (slow)"
    } else {
        "KVM: absent → QEMU under TCG emulation (slow)"
    };
    assert!(kvm.contains(verdict), "{kvm}");
    let pool = step(&out, "pool");
    for part in [
        "to do: make /var/lib/atelier-pool.xfs, a sparse file of 300 MiB",
        "mkfs.xfs -m reflink=1",
        "add to /etc/fstab: /var/lib/atelier-pool.xfs /var/lib/atelier xfs loop,nofail 0 0",
        "mount it at",
    ] {
        assert!(pool.contains(part), "{part:?} in:\n{pool}");
    }
    assert!(step(&out, "user").contains("to do: add the system user atelier"));
    assert!(step(&out, "data dir").contains("to do: make /var/lib/atelier owned by atelier"));
    assert!(step(&out, "config")
        .contains("to do: write /var/lib/atelier/config.toml (listen, driver, [preview])"));
    assert!(step(&out, "binaries").contains("as /usr/local/bin/atelier"));
    assert!(step(&out, "unit").contains("to do: write /etc/systemd/system/atelier.service"));
    assert!(step(&out, "enable").contains("to do: enable it"));
    let caddy = step(&out, "caddy");
    assert!(
        caddy.contains("to do: write /etc/caddy/Caddyfile"),
        "{caddy}"
    );
    assert!(
        caddy.contains("caddy is installed by the packages step"),
        "{caddy}"
    );
    assert!(step(&out, "service").contains("skipped: "));
    assert!(
        out.contains("Dry run: nothing was changed (9 step(s) to do)."),
        "{out}"
    );
}

#[test]
fn a_missing_package_is_named_in_the_plan() {
    let all_but_xfsprogs: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| *p != "xfsprogs")
        .collect();
    let root = Root::new(&all_but_xfsprogs);
    let out = ok(&root.init(&["--dry-run", "--domain", "example.com"]));
    let packages = step(&out, "packages");
    assert!(
        packages.contains("to do: install xfsprogs (apt-get"),
        "{packages}"
    );
    assert!(!packages.contains("qemu"), "{packages}");

    let root = Root::new(PACKAGES);
    let out = ok(&root.init(&["--dry-run", "--domain", "example.com"]));
    let packages = step(&out, "packages");
    assert!(
        packages.starts_with("  packages  done: installed: qemu-system-x86"),
        "{packages}"
    );
    // Without a domain, caddy is not needed.
    let root = Root::new(&all_but_xfsprogs[..all_but_xfsprogs.len() - 1]);
    let out = ok(&root.init(&["--dry-run"]));
    assert!(
        step(&out, "packages").contains("install xfsprogs (apt-get"),
        "{out}"
    );
    assert!(
        step(&out, "caddy").contains("skipped: no --domain"),
        "{out}"
    );
}

#[test]
fn a_real_run_provisions_the_root_and_a_second_run_changes_nothing() {
    atelier_testkit::require!(real_runs_missing());
    let root = Root::new(&[]);
    let _unmount = Unmount(root.path("var/lib/atelier"));
    let pool = match pool_missing() {
        None => true,
        Some(why) => {
            // The rest is checked all the same, without a pool.
            atelier_testkit::skip(format!("the XFS pool part: {why}"));
            false
        }
    };
    let mut args = vec!["--skip-packages"];
    args.extend(if pool {
        ["--pool-size", "300M"].as_slice()
    } else {
        ["--no-pool"].as_slice()
    });
    let out = ok(&root.init(&args));
    assert!(
        step(&out, "packages").contains("skipped: --skip-packages"),
        "{out}"
    );

    let unit = root.read("etc/systemd/system/atelier.service");
    let lines: Vec<&str> = unit.lines().collect();
    assert!(
        lines.contains(&"ExecStart=/usr/local/bin/atelier serve --data-dir /var/lib/atelier"),
        "{unit}"
    );
    assert!(lines.contains(&"Restart=on-failure"), "{unit}");
    assert!(lines.contains(&"WantedBy=multi-user.target"), "{unit}");
    let link =
        std::fs::read_link(root.path("etc/systemd/system/multi-user.target.wants/atelier.service"))
            .unwrap();
    assert_eq!(link, Path::new("/etc/systemd/system/atelier.service"));

    let passwd = root.read("etc/passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("atelier:"))
        .unwrap_or_else(|| panic!("no atelier in:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5], "/var/lib/atelier", "{user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{user}");
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    assert!(root
        .read("etc/group")
        .lines()
        .any(|l| l.starts_with("atelier:")));
    let data = std::fs::metadata(root.path("var/lib/atelier")).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o7777), (uid, 0o750));

    let config = root.read("var/lib/atelier/config.toml");
    let config_lines: Vec<&str> = config.lines().collect();
    assert!(
        config_lines.contains(&"listen = \"127.0.0.1:4000\""),
        "{config}"
    );
    assert!(config_lines.contains(&"driver = \"auto\""), "{config}");
    assert!(!config.contains("[preview]"), "{config}");
    assert!(!root.path("etc/caddy/Caddyfile").exists());

    let installed = std::fs::read(root.path("usr/local/bin/atelier")).unwrap();
    assert!(
        installed == std::fs::read(common::atelier_bin()).unwrap(),
        "the installed atelier is not this build"
    );
    assert!(
        std::fs::metadata(root.path("usr/local/bin/atelier"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );

    let fstab = root.read("etc/fstab");
    assert!(
        fstab.starts_with("UUID=0a1b2c3d / ext4 errors=remount-ro 0 1\n"),
        "{fstab}"
    );
    if pool {
        assert!(
            fstab
                .lines()
                .any(|l| l == "/var/lib/atelier-pool.xfs /var/lib/atelier xfs loop,nofail 0 0"),
            "{fstab}"
        );
        let image = root.path("var/lib/atelier-pool.xfs");
        let md = std::fs::metadata(&image).unwrap();
        assert_eq!(md.len(), 300 << 20);
        assert!(md.blocks() * 512 < md.len(), "the image is sparse");
        let info = Command::new("xfs_info").arg(&image).output().unwrap();
        let info = text(&info.stdout) + &text(&info.stderr);
        assert!(info.contains("reflink=1"), "{info}");
        // The data directory is the pool: config.toml was written onto it.
        assert!(mounted(&root.path("var/lib/atelier")));
        let on = Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE", "--target"])
            .arg(root.path("var/lib/atelier/config.toml"))
            .output()
            .unwrap();
        assert_eq!(text(&on.stdout).trim(), "xfs");
    } else {
        assert!(!fstab.contains("atelier"), "{fstab}");
        assert!(step(&out, "pool").contains("skipped: --no-pool"), "{out}");
    }

    let before = root.snapshot();
    let again = ok(&root.init(&args));
    assert_eq!(
        root.snapshot(),
        before,
        "the second run changed the root:\n{again}"
    );
    assert!(
        !again
            .lines()
            .any(|l| l.contains("to do:") && !l.starts_with("Nothing to do:")),
        "{again}"
    );
    assert!(
        again.contains("Nothing to do: every step is done."),
        "{again}"
    );
    for label in ["user", "data dir", "config", "binaries", "unit", "enable"] {
        assert!(step(&again, label).contains("done: "), "{label}:\n{again}");
    }
    if pool {
        assert!(
            step(&again, "pool")
                .contains("done: /var/lib/atelier-pool.xfs mounted at /var/lib/atelier (xfs)"),
            "{again}"
        );
    }
}

#[test]
fn with_a_domain_caddy_fronts_the_dashboard_and_the_previews() {
    atelier_testkit::require!(real_runs_missing());
    let root = Root::new(PACKAGES);
    let out = ok(&root.init(&[
        "--no-pool",
        "--domain",
        "example.com",
        "--preview-domain",
        "sandboxes.example.com",
    ]));
    assert!(step(&out, "packages").contains("done: installed:"), "{out}");
    let caddy = step(&out, "caddy");
    assert!(
        caddy.contains("warning: Caddy 2.6.2-6 is older than 2.11"),
        "{caddy}"
    );

    let config = root.read("var/lib/atelier/config.toml");
    assert!(config.contains(
        "[preview]\n\
         public_url = \"https://example.com\"          # the dashboard's public URL\n\
         domain = \"sandboxes.example.com\"            # previews at https://<port>-<sandbox>.<domain>/\n"
    ), "{config}");
    let caddyfile = root.read("etc/caddy/Caddyfile");
    for part in [
        "{\n\ton_demand_tls {\n\t\task http://127.0.0.1:4000/api/v1/tls/ask\n\t}\n}\n",
        "\nexample.com {\n\treverse_proxy 127.0.0.1:4000\n}\n",
        "\n*.sandboxes.example.com {\n\ttls {\n\t\ton_demand\n\t}\n\treverse_proxy 127.0.0.1:4000 {",
        "header_up Host {host}",
    ] {
        assert!(caddyfile.contains(part), "{part:?} in:\n{caddyfile}");
    }

    let before = root.snapshot();
    let again = ok(&root.init(&[
        "--no-pool",
        "--domain",
        "example.com",
        "--preview-domain",
        "sandboxes.example.com",
    ]));
    assert_eq!(
        root.snapshot(),
        before,
        "the second run changed the root:\n{again}"
    );
    assert!(
        step(&again, "caddy").contains("done: /etc/caddy/Caddyfile is up to date"),
        "{again}"
    );
}

#[test]
fn a_user_edited_config_is_never_lost() {
    atelier_testkit::require!(real_runs_missing());
    let root = Root::new(&[]);
    let mine = "# my host\nlisten = \"0.0.0.0:5000\"   # reached over the VPN\nboot_timeout_secs = 300\n\n[local]\nagent_binary = \"/opt/atelier/agent\"\n";
    root.write("var/lib/atelier/config.toml", mine);
    let args = ["--skip-packages", "--no-pool", "--domain", "example.com"];
    let out = ok(&root.init(&args));
    let config_step = step(&out, "config");
    assert!(
        config_step.contains("to do: add driver, [preview] to /var/lib/atelier/config.toml"),
        "{config_step}"
    );
    assert!(
        config_step.contains("kept your listen = \"0.0.0.0:5000\""),
        "{config_step}"
    );

    let merged = root.read("var/lib/atelier/config.toml");
    // Every line of the user's file is still there, in order.
    let mut rest = merged.as_str();
    for line in mine.lines() {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} lost:\n{merged}"));
        rest = &rest[at + line.len()..];
    }
    assert!(merged.contains("\ndriver = \"auto\"\n"), "{merged}");
    assert!(
        merged.contains("domain = \"preview.example.com\""),
        "{merged}"
    );
    // Caddy goes where the manager listens.
    let caddyfile = root.read("etc/caddy/Caddyfile");
    assert!(
        caddyfile.contains("reverse_proxy 127.0.0.1:5000"),
        "{caddyfile}"
    );

    // Edited again by hand, towards another domain, and the Caddyfile as well: init
    // changes neither, says so, and fails.
    let edited = merged.replace("preview.example.com", "preview.other.org");
    root.write("var/lib/atelier/config.toml", &edited);
    let caddy_edited = caddyfile.replace(
        "reverse_proxy 127.0.0.1:5000\n}",
        "reverse_proxy 127.0.0.1:5000\n\tencode gzip\n}",
    );
    root.write("etc/caddy/Caddyfile", &caddy_edited);
    let before = root.snapshot();
    let out = root.init(&args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(step(&stdout, "config").contains("conflict: /var/lib/atelier/config.toml: preview.domain is \"preview.other.org\", not \"preview.example.com\""), "{stdout}");
    assert!(
        step(&stdout, "caddy").contains("conflict: /etc/caddy/Caddyfile was edited"),
        "{stdout}"
    );
    assert!(stdout.contains("2 conflict(s) left to you"), "{stdout}");
    assert_eq!(root.snapshot(), before, "{stdout}");

    // A Caddyfile init did not write (Debian's default) is kept aside, not lost.
    root.write("var/lib/atelier/config.toml", &merged);
    root.write(
        "etc/caddy/Caddyfile",
        ":80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n",
    );
    let out = ok(&root.init(&args));
    assert!(
        step(&out, "caddy").contains(
            "keep the /etc/caddy/Caddyfile that init did not write as /etc/caddy/Caddyfile.orig"
        ),
        "{out}"
    );
    assert_eq!(
        root.read("etc/caddy/Caddyfile.orig"),
        ":80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n"
    );
    assert_eq!(root.read("etc/caddy/Caddyfile"), caddyfile);
}

#[test]
fn a_pool_device_is_formatted_only_when_it_holds_nothing() {
    atelier_testkit::require!(pool_missing());
    atelier_testkit::require!(atelier_testkit::missing(&[
        ("mkfs.ext4", "e2fsprogs"),
        ("wipefs", "util-linux")
    ]));
    let root = Root::new(&[]);
    // Outside the root: the mounted filesystem writes to it through the loop device.
    let scratch = tempfile::tempdir().unwrap();
    let backing = scratch.path().join("device.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let dev = text(
        &Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    assert!(dev.starts_with("/dev/loop"), "losetup gave {dev:?}");
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let _unmount = Unmount(root.path("var/lib/atelier"));
    let run = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(run(&["mkfs.ext4", "-q", &dev]).status.success());

    let args = ["--skip-packages", "--pool-device", &dev];
    let out = root.init(&args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        step(&stdout, "pool").contains(&format!("conflict: {dev} holds ext4: init never formats")),
        "{stdout}"
    );
    assert_eq!(
        text(&run(&["blkid", "-p", "-o", "value", "-s", "TYPE", &dev]).stdout).trim(),
        "ext4"
    );
    // Nothing goes into the data directory while the pool could still hide it.
    assert!(
        step(&stdout, "config").contains("skipped: waits for the pool's conflict"),
        "{stdout}"
    );
    assert!(!root.path("var/lib/atelier/config.toml").exists());

    assert!(run(&["wipefs", "-q", "-a", &dev]).status.success());
    let out = ok(&root.init(&args));
    assert!(
        step(&out, "pool").contains(&format!("to do: format {dev} (it holds no filesystem)")),
        "{out}"
    );
    let uuid = text(&run(&["blkid", "-p", "-o", "value", "-s", "UUID", &dev]).stdout)
        .trim()
        .to_owned();
    assert!(!uuid.is_empty());
    let fstab = root.read("etc/fstab");
    assert!(
        fstab
            .lines()
            .any(|l| l == format!("UUID={uuid} /var/lib/atelier xfs nofail 0 0")),
        "{fstab}"
    );
    assert!(mounted(&root.path("var/lib/atelier")));
    let info = text(&run(&["xfs_info", &dev]).stdout);
    assert!(info.contains("reflink=1"), "{info}");

    let before = root.snapshot();
    let again = ok(&root.init(&args));
    assert_eq!(root.snapshot(), before, "{again}");
    assert!(
        step(&again, "pool").contains(&format!("done: {dev} mounted at /var/lib/atelier (xfs)")),
        "{again}"
    );
}
