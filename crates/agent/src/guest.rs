//! Guest mode (`--guest-config /dev/vdb`): inside a VM the agent reads its settings from
//! the raw config disk the driver attached, and — as the VM's init — sets the machine up:
//! mounts, hostname, clock, network, environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use atelier_proto::{AgentAddr, GuestConfig, GUEST_CONFIG_DISK_BYTES};

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

/// Sets the machine up; run once, by PID 1, before anything else starts.
pub fn set_up_machine(cfg: &GuestConfig) {
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
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );

    if let Err(e) = nix::unistd::sethostname(&cfg.hostname) {
        eprintln!("atelier-agent (guest): hostname: {e}");
    }
    let _ = std::fs::write("/etc/hostname", format!("{}\n", cfg.hostname));
    // Tools like sudo resolve their own host name.
    let _ = std::fs::write(
        "/etc/hosts",
        format!(
            "127.0.0.1 localhost\n127.0.1.1 {0}\n::1 localhost ip6-localhost\n",
            cfg.hostname
        ),
    );
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
    fn reads_nul_padded_json_and_derives_the_agent_config() {
        let cfg = GuestConfig {
            hostname: "box".into(),
            token: "t0k".into(),
            listen: "tcp:0.0.0.0:1024".into(),
            clock_epoch_ms: 1,
            network: None,
            env: Default::default(),
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
