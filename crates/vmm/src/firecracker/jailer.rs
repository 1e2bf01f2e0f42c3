//! Launching Firecracker through its `jailer`: a chroot per sandbox, dropped privileges,
//! a cgroup and (optionally) a network namespace.
//!
//! The jailer creates `<chroot_base>/<exec file name>/<id>/root`, copies the Firecracker
//! binary into it, pivots into it, drops to `uid`/`gid` and execs Firecracker — which
//! therefore keeps the jailer's pid. Everything Firecracker opens must be inside the
//! chroot; the driver hard-links (or copies) the kernel, initramfs and disks there
//! beforehand and refers to them by their paths inside the chroot.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use atelier_core::SandboxId;

/// How to run Firecracker under the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (same version as Firecracker).
    pub binary: PathBuf,
    /// Unprivileged user and group Firecracker runs as.
    pub uid: u32,
    pub gid: u32,
    /// `--chroot-base-dir` (the jailer's default is `/srv/jailer`).
    pub chroot_base: PathBuf,
    /// `--cgroup-version`; 2 unless the host still runs cgroup v1.
    pub cgroup_version: u8,
    /// `--parent-cgroup`; the jailer's default is the exec file's name.
    pub parent_cgroup: Option<String>,
    /// `--cgroup <file>=<value>` settings, e.g. `cpu.max=200000 100000`.
    pub cgroups: Vec<String>,
    /// `--netns`: a network namespace to join, e.g. `/var/run/netns/atelier`.
    pub netns: Option<PathBuf>,
}

impl JailerConfig {
    pub fn new(binary: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self {
            binary: binary.into(),
            uid,
            gid,
            chroot_base: PathBuf::from("/srv/jailer"),
            cgroup_version: 2,
            parent_cgroup: None,
            cgroups: vec![],
            netns: None,
        }
    }

    /// `<chroot_base>/<exec file name>`: where the jails of this Firecracker binary live.
    pub fn jails_dir(&self, firecracker: &Path) -> PathBuf {
        self.chroot_base
            .join(firecracker.file_name().unwrap_or_default())
    }

    /// `<chroot_base>/<exec file name>/<id>`: the sandbox's jail (removed on stop).
    pub fn jail_dir(&self, firecracker: &Path, id: &SandboxId) -> PathBuf {
        self.jails_dir(firecracker).join(id.as_str())
    }

    /// `<jail>/root`: what Firecracker sees as `/`.
    pub fn chroot(&self, firecracker: &Path, id: &SandboxId) -> PathBuf {
        self.jail_dir(firecracker, id).join("root")
    }

    /// The cgroup (v2) the jailer creates for the sandbox, removed after it stopped.
    pub fn cgroup_dir(&self, firecracker: &Path, id: &SandboxId) -> Option<PathBuf> {
        if self.cgroup_version != 2 {
            return None;
        }
        let parent = match &self.parent_cgroup {
            Some(p) => PathBuf::from(p.trim_start_matches('/')),
            None => PathBuf::from(firecracker.file_name()?),
        };
        Some(Path::new("/sys/fs/cgroup").join(parent).join(id.as_str()))
    }

    /// The jailer's arguments (without the program), ending with `--` and the arguments
    /// passed on to Firecracker.
    pub fn argv(
        &self,
        firecracker: &Path,
        id: &SandboxId,
        firecracker_args: &[OsString],
    ) -> Vec<OsString> {
        self.argv_in(firecracker, id, None, firecracker_args)
    }

    /// [`Self::argv`] with the network namespace `netns` (the sandbox's own) in place of
    /// the configured one.
    pub fn argv_in(
        &self,
        firecracker: &Path,
        id: &SandboxId,
        netns: Option<&Path>,
        firecracker_args: &[OsString],
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            id.as_str().into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--cgroup-version".into(),
            self.cgroup_version.to_string().into(),
        ];
        if let Some(p) = &self.parent_cgroup {
            a.push("--parent-cgroup".into());
            a.push(p.into());
        }
        for c in &self.cgroups {
            a.push("--cgroup".into());
            a.push(c.into());
        }
        if let Some(ns) = netns.or(self.netns.as_deref()) {
            a.push("--netns".into());
            a.push(ns.into());
        }
        a.push("--".into());
        a.extend(firecracker_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn argv_has_the_jailer_flags_then_firecracker_args() {
        let id = SandboxId::from_trusted("sabcdefghjkm".into());
        let mut j = JailerConfig::new("/usr/bin/jailer", 1234, 5678);
        j.chroot_base = "/srv/jail".into();
        let fc = Path::new("/opt/fc/firecracker");
        let argv = j.argv(fc, &id, &["--api-sock".into(), "/run/api.sock".into()]);
        assert_eq!(
            strings(&argv),
            [
                "--id",
                "sabcdefghjkm",
                "--exec-file",
                "/opt/fc/firecracker",
                "--uid",
                "1234",
                "--gid",
                "5678",
                "--chroot-base-dir",
                "/srv/jail",
                "--cgroup-version",
                "2",
                "--",
                "--api-sock",
                "/run/api.sock"
            ]
        );
        assert_eq!(
            j.chroot(fc, &id),
            Path::new("/srv/jail/firecracker/sabcdefghjkm/root")
        );
        assert_eq!(
            j.cgroup_dir(fc, &id).unwrap(),
            Path::new("/sys/fs/cgroup/firecracker/sabcdefghjkm")
        );
    }

    #[test]
    fn optional_flags_come_before_the_separator() {
        let id = SandboxId::from_trusted("sabcdefghjkm".into());
        let mut j = JailerConfig::new("/usr/bin/jailer", 1, 2);
        j.netns = Some("/var/run/netns/sb".into());
        j.parent_cgroup = Some("atelier".into());
        j.cgroups = vec!["memory.max=1073741824".into()];
        let argv = strings(&j.argv(Path::new("/usr/bin/firecracker"), &id, &[]));
        let sep = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(sep, argv.len() - 1, "nothing after -- here");
        let pairs: Vec<_> = argv[..sep]
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        assert!(pairs.contains(&("--netns", "/var/run/netns/sb")));
        assert!(pairs.contains(&("--parent-cgroup", "atelier")));
        assert!(pairs.contains(&("--cgroup", "memory.max=1073741824")));
        assert_eq!(
            j.cgroup_dir(Path::new("/usr/bin/firecracker"), &id)
                .unwrap(),
            Path::new("/sys/fs/cgroup/atelier/sabcdefghjkm")
        );
        // A sandbox's own namespace takes the place of the configured one.
        let own = strings(&j.argv_in(
            Path::new("/usr/bin/firecracker"),
            &id,
            Some(Path::new("/var/run/netns/atelier-sabcdefghjkm")),
            &[],
        ));
        let at = own.iter().position(|a| a == "--netns").unwrap();
        assert_eq!(own[at + 1], "/var/run/netns/atelier-sabcdefghjkm");
        assert_eq!(own.iter().filter(|a| *a == "--netns").count(), 1);
    }
}
