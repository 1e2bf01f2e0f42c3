//! Guest mode (`--guest-config /dev/vdb`): inside a VM the agent reads its settings from
//! the raw config disk the driver attached, and — as the VM's init — sets the machine up:
//! mounts, hostname, clock, network, environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use atelier_proto::{AgentAddr, GuestConfig, GuestMount, GuestMountFs, GUEST_CONFIG_DISK_BYTES};

/// Reads the NUL-padded JSON of the config disk (or file).
pub fn read(path: &Path) -> Result<GuestConfig, String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut buf = vec![0u8; GUEST_CONFIG_DISK_BYTES];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        }
    }
    let end = buf[..n].iter().position(|b| *b == 0).unwrap_or(n);
    serde_json::from_slice(&buf[..end])
        .map_err(|e| format!("{} holds no guest config: {e}", path.display()))
}

/// The agent's own settings in a guest: listen address and token from the config; the
/// whole filesystem as its root; state under /var/lib/atelier.
pub fn agent_config(cfg: &GuestConfig) -> Result<crate::Config, String> {
    let listen: AgentAddr = cfg.listen.parse()?;
    if cfg.token.trim().is_empty() {
        return Err("the guest config has no token".into());
    }
    Ok(crate::Config {
        listen,
        token: cfg.token.trim().to_owned(),
        roots: vec![PathBuf::from("/")],
        state_dir: PathBuf::from("/var/lib/atelier"),
        guest: true,
    })
}

/// Sets the machine up; run once, by PID 1, before anything else starts. Fails only
/// when a shared folder cannot be mounted: a sandbox without the folder it was given
/// must not look healthy.
pub fn set_up_machine(cfg: &GuestConfig) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let tmpfs = |target: &str, mode: &str| {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(mode),
        ) {
            eprintln!("atelier-agent (guest): mounting {target}: {e}");
        }
    };
    tmpfs("/run", "mode=0755");
    tmpfs("/tmp", "mode=1777");
    tmpfs("/dev/shm", "mode=1777");
    for name in ["hostname", "hosts", "machine-id"] {
        if let Err(e) = bind_from_run(name) {
            eprintln!("atelier-agent (guest): /etc/{name}: {e}");
        }
    }
    if let Err(e) = boot_machine_id() {
        eprintln!("atelier-agent (guest): machine id: {e}");
    }
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );

    if let Err(e) = set_hostname(&cfg.hostname) {
        eprintln!("atelier-agent (guest): {e}");
    }
    if let Err(e) = step_clock(cfg.clock_epoch_ms) {
        eprintln!("atelier-agent (guest): {e}");
    }

    run("ip", &["link", "set", "lo", "up"]);
    if let Some(net) = &cfg.network {
        run("ip", &["link", "set", "eth0", "up"]);
        run("ip", &["addr", "add", &net.address, "dev", "eth0"]);
        run("ip", &["route", "add", "default", "via", &net.gateway]);
        let resolv: String = net
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        let _ = std::fs::write("/etc/resolv.conf", resolv);
    }
    for (k, v) in &cfg.env {
        // SAFETY: PID 1 runs this before any other thread exists.
        std::env::set_var(k, v);
    }
    cfg.mounts.iter().try_for_each(mount_shared)
}

/// What `mount(2)` is given for a shared folder: source (its tag), file system type,
/// flags and options.
pub fn mount_args(m: &GuestMount) -> (&str, &'static str, nix::mount::MsFlags, Option<String>) {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if m.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    match m.fs {
        GuestMountFs::Virtiofs => (m.tag.as_str(), "virtiofs", flags, None),
        GuestMountFs::NineP => (
            m.tag.as_str(),
            "9p",
            flags,
            Some(format!(
                "trans=virtio,version=9p2000.L,msize={NINE_P_MSIZE}"
            )),
        ),
    }
}

/// 9p's largest message: 512 KiB, what virtio's ring carries in one go.
const NINE_P_MSIZE: u32 = 512 * 1024;

/// Mounts one shared folder at its path (made first if missing).
fn mount_shared(m: &GuestMount) -> Result<(), String> {
    let (source, fstype, flags, data) = mount_args(m);
    std::fs::create_dir_all(&m.path).map_err(|e| format!("creating {}: {e}", m.path))?;
    nix::mount::mount(
        Some(source),
        m.path.as_str(),
        Some(fstype),
        flags,
        data.as_deref(),
    )
    .map_err(|e| {
        format!(
            "mounting the shared folder {source} ({fstype}) at {}: {e}",
            m.path
        )
    })
}

/// Puts `/etc/<name>` on tmpfs: a file under `/run/atelier/etc` (starting with the root
/// filesystem's content) bind-mounted over it, as containers do. The identity files are
/// rewritten at every boot and restore anyway; on tmpfs, a restored clone takes its new
/// identity several times faster than on ext4 (each kernel path runs cold after a
/// restore, and under emulation pays its translation). Like in a container, the file can
/// be edited in place but not replaced by a rename (`sed -i` answers EBUSY).
fn bind_from_run(name: &str) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let target = format!("/etc/{name}");
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(()); // a link points somewhere on purpose; write through it
    }
    let dir = "/run/atelier/etc";
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    let source = format!("{dir}/{name}");
    let content = std::fs::read(&target).unwrap_or_default();
    std::fs::write(&source, content).map_err(|e| format!("writing {source}: {e}"))?;
    if std::fs::metadata(&target).is_err() {
        std::fs::write(&target, b"").map_err(|e| format!("creating {target}: {e}"))?;
    }
    mount(
        Some(source.as_str()),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting {source}: {e}"))
}

/// Names the machine: the kernel's host name, `/etc/hostname`, and `/etc/hosts` (tools
/// like sudo resolve their own host name).
pub fn set_hostname(name: &str) -> Result<(), String> {
    nix::unistd::sethostname(name).map_err(|e| format!("setting the host name: {e}"))?;
    write_replacing("/etc/hostname", format!("{name}\n").as_bytes(), 0o644)?;
    write_replacing(
        "/etc/hosts",
        format!("127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost ip6-localhost\n").as_bytes(),
        0o644,
    )
}

/// Replaces the content of `path` (one `write`: these files are a few bytes). Not
/// synced: they are rewritten at every boot and restore, and the manager has the guest
/// `sync` before it stops or captures it. In place rather than through a renamed temp file:
/// after a restore every kernel path runs for the first time, and under emulation (TCG)
/// each one costs its translation — this keeps the identity change short.
fn write_replacing(path: &str, content: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(content))
        .map_err(|e| format!("writing {path}: {e}"))
}

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)` (Linux 4.17+).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// `struct rand_pool_info` with room for the largest entropy an identity may carry.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; atelier_proto::IDENTITY_MAX_ENTROPY_BYTES],
}

/// Mixes `entropy` into the kernel's input pool, credited in full (it is fresh host
/// randomness), then forces the CRNG to reseed from it: without the reseed, clones of one
/// memory snapshot keep the same CRNG key — identical `/dev/urandom` output — until the
/// kernel's next scheduled reseed (up to a minute later). Needs CAP_SYS_ADMIN (PID 1 in
/// the guest has it). Returns the bytes credited.
pub fn mix_entropy(entropy: &[u8]) -> Result<usize, String> {
    use std::os::fd::AsRawFd;
    let n = entropy.len().min(atelier_proto::IDENTITY_MAX_ENTROPY_BYTES);
    let mut info = RandPoolInfo {
        entropy_count: (n * 8) as libc::c_int,
        buf_size: n as libc::c_int,
        buf: [0; atelier_proto::IDENTITY_MAX_ENTROPY_BYTES],
    };
    info.buf[..n].copy_from_slice(&entropy[..n]);
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("opening /dev/urandom: {e}"))?;
    // SAFETY: a valid rand_pool_info whose buf_size does not exceed its buffer.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, &info) } != 0 {
        return Err(format!(
            "RNDADDENTROPY: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(format!(
            "RNDRESEEDCRNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(n)
}

/// Where the machine id persists across boots (`/etc/machine-id` itself is on tmpfs).
pub const MACHINE_ID_FILE: &str = "/var/lib/atelier/machine-id";

fn valid_machine_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !id.bytes().all(|b| b == b'0')
}

/// At boot: the persisted machine id, else the root filesystem's, else a new random one,
/// into `/etc/machine-id` (and persisted).
fn boot_machine_id() -> Result<(), String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| valid_machine_id(s))
    };
    let persisted = read(MACHINE_ID_FILE);
    let id = match persisted.clone().or_else(|| read("/etc/machine-id")) {
        Some(id) => id,
        None => {
            use std::io::Read;
            let mut bytes = [0u8; 16];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| format!("reading /dev/urandom: {e}"))?;
            bytes[0] |= 1;
            atelier_proto::to_hex(&bytes)
        }
    };
    set_machine_id(&id)?;
    if persisted.as_deref() != Some(id.as_str()) {
        persist_machine_id(&id)?;
    }
    Ok(())
}

/// Writes `/etc/machine-id` (mode 0444; on tmpfs, see [`bind_from_run`]). Call
/// [`persist_machine_id`] too for the id to survive a reboot.
pub fn set_machine_id(id: &str) -> Result<(), String> {
    write_replacing("/etc/machine-id", format!("{id}\n").as_bytes(), 0o444)
}

/// Records the machine id on the root filesystem, for the next boot.
pub fn persist_machine_id(id: &str) -> Result<(), String> {
    if let Some(dir) = Path::new(MACHINE_ID_FILE).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    write_replacing(MACHINE_ID_FILE, format!("{id}\n").as_bytes(), 0o444)
}

/// Steps the wall clock to `epoch_ms` (the host's clock).
pub fn step_clock(epoch_ms: i64) -> Result<(), String> {
    if epoch_ms <= 0 {
        return Err("the time must be after 1970".into());
    }
    let ts = libc::timespec {
        tv_sec: epoch_ms / 1000,
        tv_nsec: (epoch_ms % 1000) * 1_000_000,
    };
    // SAFETY: a valid timespec for CLOCK_REALTIME.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "setting the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) {
    match Command::new(program).args(args).status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "atelier-agent (guest): {program} {} exited with {s}",
            args.join(" ")
        ),
        Err(e) => eprintln!("atelier-agent (guest): {program}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_32_lowercase_hex_digits_not_all_zero() {
        assert!(valid_machine_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_machine_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!valid_machine_id(&"0".repeat(32)));
        assert!(!valid_machine_id("uninitialized"));
        assert!(!valid_machine_id(""));
    }

    #[test]
    fn shared_folders_mount_by_tag_with_their_file_system() {
        use nix::mount::MsFlags;
        let mut m = GuestMount {
            fs: GuestMountFs::NineP,
            tag: "share0".into(),
            path: "/workspace".into(),
            read_only: false,
        };
        let (source, fstype, flags, data) = mount_args(&m);
        assert_eq!((source, fstype), ("share0", "9p"));
        assert_eq!(
            data.as_deref(),
            Some("trans=virtio,version=9p2000.L,msize=524288")
        );
        assert!(!flags.contains(MsFlags::MS_RDONLY));
        assert!(flags.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID));
        m.fs = GuestMountFs::Virtiofs;
        m.read_only = true;
        let (source, fstype, flags, data) = mount_args(&m);
        assert_eq!((source, fstype, data), ("share0", "virtiofs", None));
        assert!(flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn reads_nul_padded_json_and_derives_the_agent_config() {
        let cfg = GuestConfig {
            hostname: "box".into(),
            token: "t0k".into(),
            listen: "tcp:0.0.0.0:1024".into(),
            clock_epoch_ms: 1,
            network: None,
            env: Default::default(),
            mounts: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("config.img");
        let mut bytes = serde_json::to_vec(&cfg).unwrap();
        bytes.resize(GUEST_CONFIG_DISK_BYTES, 0);
        std::fs::write(&disk, bytes).unwrap();
        let back = read(&disk).unwrap();
        assert_eq!(back, cfg);
        let agent = agent_config(&back).unwrap();
        assert_eq!(agent.token, "t0k");
        assert_eq!(agent.roots, [PathBuf::from("/")]);
        std::fs::write(&disk, vec![0u8; 100]).unwrap();
        assert!(read(&disk).is_err());
    }
}
